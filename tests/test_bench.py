import json
import os
import re
import subprocess
import sys
import textwrap

from nst.bench import format_table

from .conftest import EXAMPLES, ROOT


def run_python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def bench_tables_quoted() -> list[list[list[str]]]:
    """The tables that README.md and docs/speed.md quote from `python -m nst.bench`: each table after
    a paragraph that gives the command, before the next heading, as rows of cells (the header first)."""
    tables = []
    for path in (ROOT / "README.md", ROOT / "docs" / "speed.md"):
        if not path.exists():
            continue
        for section in re.split(r"^#+ .*$", path.read_text(), flags=re.M):
            for after_command in re.split(r"`python -m nst\.bench\b", section)[1:]:
                table = re.search(r"^\|.*\|\n\|[-| :]+\|\n(?:\|.*\|\n?)*", after_command, re.M)
                if table:
                    lines = table.group(0).strip().splitlines()
                    tables.append([[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]])
    return tables


def test_bench_reports_every_figure_the_readme_quotes():
    quoted = bench_tables_quoted()
    assert quoted, "README.md or docs/speed.md should quote a table of `python -m nst.bench`"
    result = subprocess.run([sys.executable, "-m", "nst.bench", "--sizes", "64", "--steps", "1", "--run-size", "64", "--run-steps", "2",
                             "--precisions", "fp32", "--json"],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and report["peak_conv_gflops"] > 0
    (row,) = report["sizes"]
    for config in ("naive", "ours_fp32", "ours_fp32_direct", "ours_fp32_masked"):
        figures = row[config]
        assert figures["s_per_step"] > 0 and figures["gflops"] > 0 and 0 < figures["fraction_of_peak"]
        assert 200 < figures["peak_mb"] < 4000  # a fresh process with torch and the network loaded
    assert row["naive_over_ours_fp32"] == row["naive"]["s_per_step"] / row["ours_fp32"]["s_per_step"]
    assert row["masked_over_ours_fp32"] == row["ours_fp32_masked"]["s_per_step"] / row["ours_fp32"]["s_per_step"]
    (run,) = report["runs"]
    assert run["steps"] == 2 and run["size"] == 64
    for optimizer in ("lbfgs", "adam"):
        assert run[optimizer]["seconds"] > 0 and run[optimizer]["distance"]["style"] > 0
    # what the bench prints without --json: every column and configuration the docs quote is in it
    printed = format_table(report)
    header = next(line for line in printed.splitlines() if line.startswith("| size |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    configs = {name for name, value in row.items() if isinstance(value, dict)}
    for header_cells, *rows in quoted:
        assert set(header_cells) <= set(columns), (header_cells, columns)
        config_column = header_cells.index("config")
        for cells in rows:  # fp32 here stands in for the precisions a machine with bf16 adds
            assert re.sub(r"bf16", "fp32", cells[config_column]) in configs, (cells, configs)


def test_steps_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    # A process-wide policy, so each in a fresh process: minor page faults per optimisation step.
    code = """
        import resource, statistics, sys
        from nst import Settings, open_image, stylize
        from nst.memory import limit_heap_growth, reuse_freed_memory
        reuse_freed_memory() if sys.argv[1] == "reuse" else limit_heap_growth()
        frames = stylize(open_image(sys.argv[2]), open_image(sys.argv[3]),
                         Settings(size=256, steps=50, multiscale=False, frame_interval=0))
        faults = []
        for _ in range(8):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            next(frames)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(statistics.median(faults[2:]))
    """
    images = [str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "starry_night.jpg")]
    reused = run_python(code, "reuse", *images)
    returned = run_python(code, "limit", *images)
    assert reused.returncode == 0 and returned.returncode == 0, reused.stderr + returned.stderr
    reused_pages, returned_pages = float(reused.stdout), float(returned.stdout)
    print(reused_pages, returned_pages)
    assert returned_pages > 10_000  # 40 MB and more of fresh pages every step at 256 px
    assert reused_pages < returned_pages / 20


def test_released_memory_goes_back_to_the_system_after_a_run():
    code = """
        import gc, sys
        from nst import Settings, open_image, stylize
        from nst.memory import release_freed_memory, reuse_freed_memory

        def resident_mb():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))

        reuse_freed_memory()
        frames = stylize(open_image(sys.argv[1]), open_image(sys.argv[2]), Settings(size=384, steps=4, multiscale=False))
        for _ in frames:
            pass
        del frames
        gc.collect()
        kept = resident_mb()
        release_freed_memory()
        print(kept, resident_mb())
    """
    result = run_python(code, str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "starry_night.jpg"))
    assert result.returncode == 0, result.stderr
    kept, released = map(int, result.stdout.split())
    print(kept, released)
    assert kept - released > 100
