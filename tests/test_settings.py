"""One declaration per setting: the engine, the CLI, the app and the README agree on each one.

The agreement test writes its table to tests/output/settings-agreement.md, as observed: the CLI's
and the app's defaults and limits are read from what they do, not from the declarations.
"""

import re
import tempfile
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest

import app
import server_policy
from nst import Settings, SettingsError, WeightsError, stylize
from nst.cli import build_parser
from nst.cli import main as cli
from nst.settings import declarations, format_number, settings_table

from .conftest import EXAMPLES, ROOT

OUTPUT = Path(__file__).resolve().parent / "output"
PAIR = [str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "starry_night.jpg"), "-o", "out.png"]


def _cli_refusal(capsys, *flags) -> str:
    """The CLI's one line refusing `flags`, which come after a small, short run's size and steps: were the
    refusal lost, the test would fail at once rather than make a 512 px picture."""
    with pytest.raises(SystemExit) as exit:
        cli([*PAIR[:2], "-o", str(Path(tempfile.gettempdir()) / "unused.png"), "--size", "64", "--steps", "1", *flags])
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def _engine_refusal(**values) -> str:
    """What the engine says to these settings: Settings refuses most; a weights file, the run that loads it."""
    with pytest.raises((SettingsError, WeightsError)) as refusal:
        settings = Settings(**values).validated()
        next(stylize(EXAMPLES / "chelsea.jpg", EXAMPLES / "starry_night.jpg", replace(settings, size=64, steps=1)))
    return str(refusal.value)


def _app_refusal(**values) -> str:
    with pytest.raises(gr.Error) as refusal:
        server_policy.parse_request({"path": str(EXAMPLES / "chelsea.jpg")}, {"path": str(EXAMPLES / "starry_night.jpg")}, None, **values)
    return refusal.value.message


# For each setting without a low-to-high range or a list of choices: a value refused, as the engine
# (Settings), the CLI's flags and the app's API take it, and what each refusal says. The CLI offers
# --flag and --no-flag for a true-or-false setting, so argparse refuses any other value.
REFUSALS = {
    "style_layers": (("relu9_9",), ["--style-layers", "relu9_9"], ["relu9_9"],
                     dict.fromkeys(("engine", "CLI", "app"), "unknown style layer 'relu9_9'; choose one of relu1_1")),
    "style_layer_weights": ((1e7,) * 5, ["--style-layer-weights", *["1e7"] * 5], [1e7] * 5,
                            dict.fromkeys(("engine", "CLI", "app"), "style layer weights must be a number from 0 to 1000000")),
    "style_blend": ((1e7,), ["--style-blend", "1e7"], [1e7],
                    dict.fromkeys(("engine", "CLI", "app"), "style blend must be a number from 0 to 1000000")),
    "multiscale": ("yes", ["--multiscale=yes"], "yes",
                   {"engine": "multiscale must be true or false", "CLI": "argument --multiscale/--no-multiscale: ignored explicit "
                    "argument 'yes'", "app": "multiscale must be true or false"}),
    "cuda_graphs": ("yes", ["--cuda-graphs=yes"], "yes",
                    {"engine": "cuda graphs must be true or false", "CLI": "argument --cuda-graphs/--no-cuda-graphs: ignored "
                     "explicit argument 'yes'"}),
    "device": ("tpu", ["--device", "tpu"], "tpu", dict.fromkeys(("engine", "CLI"), "unknown device 'tpu'; use auto, cpu, cuda")),
    "weights": ("nowhere.safetensors", ["--weights", "nowhere.safetensors"], "nowhere.safetensors",
                {"engine": "weights file not found: nowhere.safetensors", "CLI": "weights file not found: nowhere.safetensors",
                 "app": "unknown weights 'nowhere.safetensors'; choose one of embedded, imagenet"}),
}


def _range_in(message: str) -> str:
    match = re.search(r"from (\S+) to (\S+),", message)
    if match:
        return f"{match.group(1)} to {match.group(2)}"
    match = re.search(r"choose one of (.*)$", message) or re.search(r"must be (true or false)", message)
    return match.group(1) if match else message.removeprefix("python -m nst: error: ")


def test_cli_engine_and_app_agree_on_every_setting(capsys):
    parser = build_parser()
    cli_defaults = Settings(**{name: value for name, value in vars(parser.parse_args(PAIR)).items()
                               if name in {declared.name for declared in declarations()} and value is not None})
    api = dict(zip(app.API_PARAMETERS, next(fn for fn in app.demo.fns.values() if fn.api_name == "stylize").inputs))
    rows = ["| setting | engine default | CLI default | app default | engine range | CLI range | app range |", "|---" * 7 + "|"]
    for declared in declarations():
        spec, name = declared.declaration, declared.name
        engine_default = getattr(Settings(), name)
        cli_default = getattr(cli_defaults, name)
        app_default = api[name].value if name in api else "(server's)"
        if isinstance(app_default, list):
            app_default = tuple(app_default)
        assert cli_default == engine_default, name
        assert name not in api or app_default == engine_default, name
        if spec.low is not None and declared.kind is not tuple:
            too_high = spec.high * 10 + 1
            engine_range = _range_in(str(pytest.raises(SettingsError, Settings(**{name: declared.kind(too_high)}).validated).value))
            cli_range = _range_in(_cli_refusal(capsys, f"--{name.replace('_', '-')}", str(declared.kind(too_high))))
            app_range = _range_in(_app_refusal(**{name: too_high})) if name in api else "(server's)"
            assert engine_range == f"{format_number(spec.low)} to {format_number(spec.high)}", name
            assert cli_range == engine_range, name
            expected_app = f"{format_number(spec.low)} to {format_number(server_policy.capacity().limits.get(name, spec.high))}"
            assert name not in api or app_range == expected_app, name
            if name in api:
                assert (api[name].minimum, api[name].maximum) == (spec.low, server_policy.capacity().limits.get(name, spec.high)), name
        elif spec.choices and declared.kind is str:
            engine_range = _range_in(str(pytest.raises(SettingsError, Settings(**{name: "bogus"}).validated).value))
            cli_message = _cli_refusal(capsys, f"--{name.replace('_', '-')}", "bogus")
            cli_range = _range_in(cli_message) if "choose one of" in cli_message else ", ".join(re.findall(r"'(\w+)'", cli_message)[1:])
            app_range = _range_in(_app_refusal(**{name: "bogus"})) if name in api else "(server's)"
            assert engine_range == cli_range == ", ".join(spec.shown or spec.choices), name
            assert name not in api or app_range == engine_range, name
            assert name not in api or [value for _, value in api[name].choices] == list(spec.shown or spec.choices), name
        else:  # lists, true-or-false and free text: a refusal through each face, as each says it
            engine_value, cli_flags, app_value, said = REFUSALS[name]
            engine_message = _engine_refusal(**{name: engine_value})
            cli_message = _cli_refusal(capsys, *cli_flags)
            app_message = _app_refusal(**{name: app_value}) if name in api else "(server's)"
            for face, message in (("engine", engine_message), ("CLI", cli_message), ("app", app_message)):
                assert face == "app" and name not in api or said[face] in message, (name, face, message)
            engine_range, cli_range, app_range = (_range_in(message) for message in (engine_message, cli_message, app_message))
            if spec.low is not None:  # numbers, each in its range
                assert engine_range == cli_range == f"{format_number(spec.low)} to {format_number(spec.high)}", name
                assert name not in api or app_range == engine_range, name
        if name == "weights":
            assert [value for _, value in api[name].choices] == server_policy.SERVER_WEIGHTS
        rows.append(f"| `{name}` | {_shown(engine_default)} | {_shown(cli_default)} | {_shown(app_default)} | {_shown(engine_range)} | "
                    f"{_shown(cli_range)} | {_shown(app_range)} |")
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "settings-agreement.md").write_text("\n".join(rows) + "\n")


def _shown(value) -> str:
    if isinstance(value, str) and len(value) > 40:
        return value[:30] + " …"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if len(value) < 6 else f"{value[0]} … ({len(value)})"
    return str(value)


def test_the_readme_settings_table_is_the_declarations_table():
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", readme, re.S)
    assert table, "README.md needs the settings table between <!-- settings-table --> markers"
    assert table.group(1) == settings_table(), "regenerate it: python -c 'from nst.settings import settings_table; print(settings_table())'"
