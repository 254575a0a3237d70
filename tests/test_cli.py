import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image, PngImagePlugin

from nst import Settings, open_image, save_png
from nst import cli
from nst.provenance import CHUNK

from .conftest import EXAMPLES, ROOT, painted_side_changed_more

# One past the last GPU this machine has: absent on every machine, with or without CUDA.
ABSENT_GPU = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
CONTENT = str(EXAMPLES / "chelsea.jpg")
STYLE = str(EXAMPLES / "starry_night.jpg")
MASK = str(EXAMPLES / "masks" / "rocket_sky.png")


def nst(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nst", *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def test_cli_writes_the_picture_and_json_frames(tmp_path):
    output = tmp_path / "out.png"
    result = nst(CONTENT, STYLE, "-o", output, "--size", "96", "--steps", "4", "--json", "--optimizer", "adam",
                 "--preserve-colors", "luminance", "--style-layers", "relu1_1", "relu3_1", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert Image.open(output).size == (96, 64)
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert frames[-1]["step"] == 4 and frames[-1]["done"] is True and frames[-1]["seconds_left"] == 0
    assert all(frame["seconds_left"] > 0 for frame in frames[:-1])
    assert set(frames[-1]["losses"]) == {"content", "style", "tv", "total"}
    assert "4/4" in result.stderr  # the progress bar


def test_cli_save_every_and_two_styles(tmp_path):
    output = tmp_path / "out.jpg"
    result = nst(CONTENT, STYLE, EXAMPLES / "graf1.jpg", "-o", output, "--size", "64", "--steps", "4", "--save-every", "2",
                 "--style-blend", "2", "1", "--no-multiscale")
    assert result.returncode == 0, result.stderr
    assert Image.open(output).format == "JPEG"
    assert sorted(path.name for path in tmp_path.glob("out-step*.png")) == ["out-step2.png"]


@pytest.mark.parametrize("args, message", [
    ([CONTENT, "missing.jpg"], "style image: file not found: missing.jpg"),
    ([CONTENT, ROOT / "pyproject.toml"], "style image is not a readable image"),
    ([CONTENT, STYLE, "--style-layers", "relu9_9"], "unknown style layer 'relu9_9'"),
    ([CONTENT, STYLE, "--steps", "-1"], "steps must be a whole number from 1 to 10000"),
    ([CONTENT, STYLE, "--size", "99999"], "size must be a whole number from 64 to 8192"),
    ([CONTENT, STYLE, "--style-weight", "nan"], "style weight must be a number"),
    ([CONTENT, STYLE, "--content-weight", "-3"], "content weight must be a number from 0"),
    ([CONTENT, STYLE, "--style-blend", "1", "1"], "style blend: give 1 values"),
    ([CONTENT, STYLE, "--weights", "nowhere.safetensors"], "weights file not found"),
    ([CONTENT, STYLE, "--size", "big"], "argument --size: invalid int value"),
    ([CONTENT, STYLE, "--device", ABSENT_GPU], f"device '{ABSENT_GPU}' is not available here; this machine has cpu"),
    ([EXAMPLES, STYLE], "is a folder, not an image file"),
    ([CONTENT, STYLE, STYLE, "--mask", MASK, "--style-blend", "3", "1"], "a style blend does not apply with a mask"),
    ([CONTENT, STYLE, "--timelapse", ROOT / "no-such-folder" / "t.webp"], "--timelapse folder does not exist"),
    ([CONTENT, STYLE, "--timelapse", EXAMPLES], "--timelapse must end in .webp"),
])
def test_cli_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    # In this process, to keep the suite short; the next test runs one refusal as a real process.
    with pytest.raises(SystemExit) as exit:
        cli.main([*map(str, args), "-o", str(tmp_path / "out.png"), "--steps" if "--steps" not in args else "--seed", "1"])
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_a_refusal_is_the_processs_only_line_on_stderr(tmp_path):
    result = nst(CONTENT, "missing.jpg", "-o", tmp_path / "out.png")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["python -m nst: error: style image: file not found: missing.jpg"]


def test_an_output_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys):
    folder = tmp_path / "out.png"
    folder.mkdir()
    timelapse_folder = tmp_path / "t.webp"
    timelapse_folder.mkdir()
    for output, more, message in ((folder, [], f"output is a folder: {folder}"),
                                  (tmp_path / "new.png", ["--timelapse", timelapse_folder], "--timelapse is a folder")):
        with pytest.raises(SystemExit) as exit:
            cli.main([CONTENT, STYLE, "-o", str(output), *map(str, more)])
        assert exit.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()  # no progress bar: nothing was computed
        assert message in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.png", "t.webp"]  # the probe left no file


def test_an_output_through_a_link_to_a_new_file_is_written_at_the_links_target(tmp_path):
    (tmp_path / "pictures").mkdir()
    link = tmp_path / "latest.png"
    link.symlink_to(tmp_path / "pictures" / "first.png")
    assert cli.main([CONTENT, STYLE, "-o", str(link), "--size", "64", "--steps", "1"]) == 0
    assert link.is_symlink() and Image.open(tmp_path / "pictures" / "first.png").size == (64, 43)


def test_cli_refuses_an_unknown_output_format(tmp_path):
    result = nst(CONTENT, STYLE, "-o", tmp_path / "out.gif")
    assert result.returncode == 2 and "output must end in" in result.stderr


def test_a_png_remembers_its_settings_and_makes_the_same_picture_again(tmp_path):
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    made = nst(CONTENT, STYLE, "-o", first, "--size", "96", "--steps", "6", "--seed", "11", "--init", "noise", "--style-weight", "3",
               "--style-layers", "relu1_1", "relu2_1", "relu3_1", "--timelapse", tmp_path / "forming.webp")
    assert made.returncode == 0, made.stderr
    record = json.loads(Image.open(first).text["nst-settings"])
    assert record["settings"]["seed"] == 11 and record["settings"]["style_layers"] == ["relu1_1", "relu2_1", "relu3_1"]
    assert set(record["versions"]) == {"nst", "torch", "weights"}
    remade = nst(CONTENT, STYLE, "-o", again, "--settings-from", first)
    assert remade.returncode == 0, remade.stderr
    assert Image.open(again).tobytes() == Image.open(first).tobytes()
    with Image.open(tmp_path / "forming.webp") as animation:
        assert animation.format == "WEBP" and animation.n_frames >= 2 and animation.size == (96, 64)
    other = nst(CONTENT, STYLE, "-o", tmp_path / "other.png", "--settings-from", first, "--seed", "12")
    assert other.returncode == 0 and Image.open(tmp_path / "other.png").tobytes() != Image.open(first).tobytes()


def test_settings_from_a_picture_with_malformed_ones_are_refused_in_one_line(tmp_path, capsys):
    for name, settings, message in (("nested.png", {"style_blend": [[1], [2]]}, "style blend must be a number from 0 to 1000000"),
                                    ("huge.png", {"steps": 10**300}, "steps must be a whole number from 1 to 10000, not 1000")):
        picture = tmp_path / name
        info = PngImagePlugin.PngInfo()
        info.add_text(CHUNK, json.dumps({"settings": settings}))
        Image.new("RGB", (8, 8)).save(picture, pnginfo=info)
        with pytest.raises(SystemExit) as exit:
            cli.main([CONTENT, STYLE, "-o", str(tmp_path / "out.png"), "--settings-from", str(picture)])
        assert exit.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{name}: its settings are not usable here: {message}" in line and len(line) < 160


def test_settings_from_a_picture_without_them_is_refused_in_one_line(tmp_path):
    result = nst(CONTENT, STYLE, "-o", tmp_path / "out.png", "--settings-from", EXAMPLES / "chelsea.jpg")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "chelsea.jpg carries no settings" in line


def test_a_mask_file_says_where_the_style_goes(tmp_path):
    mask = tmp_path / "mask.png"
    Image.new("L", (40, 30), 0).save(mask)
    refused = nst(CONTENT, STYLE, "-o", tmp_path / "out.png", "--mask", mask)
    assert refused.returncode == 2 and "the mask is black everywhere" in refused.stderr
    painted = Image.new("L", (40, 30), 0)
    painted.paste(255, (0, 0, 20, 30))
    painted.save(mask)
    # in this process (the refusal above ran as a real one): the left half painted, the right kept the photo
    assert cli.main([CONTENT, STYLE, "-o", str(tmp_path / "out.png"), "--mask", str(mask), "--size", "64", "--steps", "6"]) == 0
    result = Image.open(tmp_path / "out.png")
    assert result.size == (64, 43)
    assert painted_side_changed_more(result.convert("RGB"), open_image(CONTENT))
    blended = tmp_path / "blended.png"  # a picture made with two styles blended: the mask leaves its blend out
    save_png(Image.new("RGB", (8, 8)), blended, Settings(style_blend=(3, 1)))
    assert cli.main([CONTENT, STYLE, str(EXAMPLES / "graf1.jpg"), "-o", str(tmp_path / "two.png"), "--mask", str(mask),
                     "--mask-feather", "4", "--size", "64", "--steps", "3", "--settings-from", str(blended)]) == 0
    assert Image.open(tmp_path / "two.png").size == (64, 43)


@pytest.mark.parametrize("launcher, program", [("/usr/local/bin/nst", "nst"), (str(ROOT / "nst" / "__main__.py"), "python -m nst")])
def test_help_and_refusals_name_the_command_as_it_was_run(monkeypatch, capsys, launcher, program):
    monkeypatch.setattr(sys, "argv", [launcher])  # what the installed script and `python -m nst` put there
    with pytest.raises(SystemExit) as exit:
        cli.main(["--help"])
    assert exit.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {program} [-h]")
    with pytest.raises(SystemExit):
        cli.main([CONTENT, STYLE, "-o", "out.bmp"])
    assert capsys.readouterr().err.startswith(f"{program}: error: output must end in")


@pytest.mark.parametrize("args", [["--help"], [CONTENT, STYLE, "-o", "out.bmp"], [CONTENT, STYLE, "-o", "out.png", "--size", "big"]])
def test_help_and_a_refused_flag_load_no_network(args):
    """--help and the refusals made while parsing answer at once: nothing before the run imports torch."""
    heavy = {"torch", "safetensors", "huggingface_hub", "tqdm"}
    code = ("import sys\nfrom nst import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted({{name.split('.')[0] for name in sys.modules}} & {heavy!r}), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *args], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                            text=True, timeout=60)
    assert result.stderr.splitlines()[-1] == "[]", result.stderr
