import json
import os
import subprocess
import sys
import textwrap

from .conftest import ROOT


def run_python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_bench_reports_every_figure_the_readme_quotes():
    result = subprocess.run([sys.executable, "-m", "nst.bench", "--sizes", "64", "--steps", "1", "--quality-size", "64",
                             "--quality-steps", "2", "--quality-budget", "3", "--json"],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and report["peak_conv_gflops"] > 0
    (row,) = report["sizes"]
    for config in ("naive", "ours_fp32", "ours_fp32_direct"):
        figures = row[config]
        assert figures["s_per_step"] > 0 and figures["gflops"] > 0 and 0 < figures["fraction_of_peak"]
        assert 200 < figures["peak_mb"] < 4000  # a fresh process with torch and the network loaded
    assert row["naive_over_ours_fp32"] == row["naive"]["s_per_step"] / row["ours_fp32"]["s_per_step"]
    quality = report["time_to_quality"]
    assert quality["naive_steps"] == 2 and quality["naive_seconds"] > 0
    for key in ("naive_distance", "ours_distance", "budget_final_distance"):
        assert quality[key]["style"] > 0 and quality[key]["content"] >= 0


def test_reused_memory_is_not_faulted_in_again():
    # Process-wide policy, so in a fresh process: the second 200 MB tensor reuses the first one's pages.
    code = """
        import resource, sys, torch
        from nst.engine import reuse_freed_memory, limit_heap_growth
        reuse_freed_memory() if sys.argv[1] == "reuse" else limit_heap_growth()
        faults = []
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.ones(50 * 2**20)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(faults[1])
    """
    pages = 200 * 2**20 // 4096
    reused = run_python(code, "reuse")
    returned = run_python(code, "limit")
    assert reused.returncode == 0 and returned.returncode == 0, reused.stderr + returned.stderr
    assert int(reused.stdout) < pages // 20
    assert int(returned.stdout) > pages // 2
