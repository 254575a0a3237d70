"""Every setting, declared once: name, type, default, range or choices, and one line of help.

From these declarations come the engine's validation and its messages (`Settings.validated`), the
command line's flags and --help (`nst.cli`), the app's input checks and its API's defaults
(`app.py`, through `Settings.from_values`), and the README's settings table (`settings_table`,
checked against the README by a test).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

from .layers import LAYER_NAMES, POOLINGS, RELU_LAYERS
from .weights import SOURCES, WEIGHT_SUFFIXES, describe_sources

DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_CONTENT_LAYER = "relu4_2"
# A style layer's weight when none are given (normalised over the layers chosen), chosen on the quality
# panel (nst.quality): relu4_1 carries the painting's strokes and mid-scale texture; relu5_1's Gram
# matrix carries parts of the painting's own objects (eyes, faces, discs), so it gets a light say.
DEFAULT_LAYER_WEIGHTS = {"relu1_1": 1.0, "relu2_1": 0.5, "relu3_1": 1.0, "relu4_1": 2.0, "relu5_1": 0.1}
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
COLOR_MODES = ("none", "luminance", "histogram")
PRECISIONS = ("auto", "fp32", "bf16")
WINOGRAD = ("auto", "on", "off")
TILES = ("auto", "off")
OTHER_LAYERS = "also conv and pool layers by name (conv4_2, pool5, ...)"


class SettingsError(ValueError):
    """A setting out of range; the message names the allowed values."""


@dataclass(frozen=True)
class Declaration:
    """What one setting may be, beyond its type and default."""

    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()  # for a text setting, or each item of a list of texts
    shown: tuple[str, ...] = ()  # the choices offered to people, when fewer than accepted
    also: str = ""  # what else is accepted, when `shown` is fewer than `choices`
    one_per: str = ""  # a list of numbers with one value per item of this (normalised to sum 1)
    none_means: str = "equal"  # what a list with one value per item is when none is given
    group: str = "picture"  # "picture": shapes the result; "run": where and how fast it is made


def _setting(default, help: str, **declaration):
    return field(default=default, metadata={"declaration": Declaration(help, **declaration)})


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a result, and how it is computed. Defaults make a good 512 px picture
    in under a minute on two CPU cores."""

    size: int = _setting(512, "long side of the result, in px", low=64, high=8192)
    steps: int = _setting(80, "optimisation steps, over all scales", low=1, high=10_000)
    content_weight: float = _setting(1.0, "weight of the photo's arrangement: more keeps more of the photo", low=0, high=1000)
    style_weight: float = _setting(3.4, "weight of the painting's textures: more paints more", low=0, high=100_000)
    tv_weight: float = _setting(0.0, "total variation weight: smooths noise", low=0, high=100)
    style_layers: tuple[str, ...] = _setting(DEFAULT_STYLE_LAYERS, "VGG19 layers whose Gram matrices carry the style",
                                             choices=LAYER_NAMES, shown=RELU_LAYERS, also=OTHER_LAYERS)
    style_layer_weights: tuple[float, ...] | None = _setting(
        None, "one weight per style layer", low=0, high=1e6, one_per="style layers",
        none_means=", ".join(f"{layer} {weight:g}" for layer, weight in DEFAULT_LAYER_WEIGHTS.items()) + ", others 1")
    content_layer: str = _setting(DEFAULT_CONTENT_LAYER, "VGG19 layer that carries the photo's arrangement",
                                  choices=LAYER_NAMES, shown=RELU_LAYERS, also=OTHER_LAYERS)
    style_blend: tuple[float, ...] | None = _setting(None, "one weight per style image", low=0, high=1e6,
                                                     one_per="style images")
    style_scale: float = _setting(1.0, "size of the style image relative to the result: larger, larger brush strokes",
                                  low=0.25, high=2.0)
    init: str = _setting("content", "the picture the optimisation starts from", choices=INITS)
    preserve_colors: str = _setting("none", "luminance: transfer brightness only; histogram: recolour the painting first",
                                    choices=COLOR_MODES)
    mask_feather: float = _setting(16.0, "with a mask: px over which its edge blends", low=0, high=256)
    multiscale: bool = _setting(True, "optimise coarse to fine, most steps on small pictures (faster)")
    pooling: str = _setting("max", "VGG19's pooling", choices=POOLINGS)
    optimizer: str = _setting("lbfgs", "the optimiser of the pixels", choices=OPTIMIZERS)
    seed: int = _setting(0, "random seed (for the noise start)", low=0, high=2**31 - 1)
    device: str = _setting("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps", group="run")
    precision: str = _setting("auto", "auto: bf16 where the hardware runs it fast, else fp32", choices=PRECISIONS, group="run")
    weights: str = _setting("embedded", f"VGG19 weights: {describe_sources()}", group="run")
    winograd: str = _setting("auto", "Winograd convolutions on CPU in fp32 (auto: at every size, or up to 768 px with tile off)",
                             choices=WINOGRAD, group="run")
    tile: str = _setting("auto", "compute a large picture in exact tiles of this side, so that memory is set by the tile "
                         "(auto: from the memory free; off: the whole picture at once)", choices=TILES, shown=TILES, low=64, high=8192,
                         also="or a side in px, 64 to 8192", group="run")
    cuda_graphs: bool = _setting(True, "replay each step as one CUDA graph on CUDA", group="run")
    frame_interval: float = _setting(0.5, "seconds between progress frames (0: every step)", low=0, high=3600, group="run")

    def validated(self, style_count: int = 1, limits: dict[str, float] | None = None) -> Settings:
        """These settings with lists as tuples and per-item weights normalised, or SettingsError
        naming what is allowed. `limits` lowers the highest allowed value of some settings (a
        server's policy)."""
        layers = self.style_layers if isinstance(self.style_layers, (tuple, list)) else ()
        counts = {"style layers": len(layers), "style images": style_count}
        values = {}
        for declared in declarations():
            if limits and declared.name in limits:
                declared = replace(declared, declaration=replace(declared.declaration, high=limits[declared.name]))
            values[declared.name] = declared.check(getattr(self, declared.name), counts)
        if len(set(values["style_layers"])) != len(values["style_layers"]):
            raise SettingsError("each style layer may be chosen once")
        if self.style_layer_weights is None:
            weights = [DEFAULT_LAYER_WEIGHTS.get(layer, 1.0) for layer in values["style_layers"]]
            values["style_layer_weights"] = tuple(weight / sum(weights) for weight in weights)
        if values["weights"] not in SOURCES and not str(values["weights"]).endswith(WEIGHT_SUFFIXES):
            raise SettingsError(f"weights must be {describe_sources()}")
        from .devices import DeviceError, resolve_device  # the one check that asks the machine (and torch): when validating, not declaring

        try:
            resolve_device(values["device"])
        except DeviceError as error:
            raise SettingsError(str(error)) from None
        return replace(self, **values)

    @classmethod
    def from_values(cls, style_count: int = 1, limits: dict[str, float] | None = None, **raw) -> Settings:
        """Settings from values as JSON or a web form sends them (lists for tuples, 150.0 for 150),
        validated (see `validated`); names not given keep their defaults."""
        unknown = set(raw) - {declared.name for declared in declarations()}
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
        values = {}
        for name, value in raw.items():
            kind = declaration(name).kind
            if isinstance(value, list):
                value = tuple(value)
            elif kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif kind is float and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1000:
                value = float(value)
            values[name] = value
        return cls(**values).validated(style_count, limits)


@dataclass(frozen=True)
class Declared:
    """One setting: its name, type, default and declaration."""

    name: str
    kind: type  # int, float, str, bool, or tuple for a list
    item: type | None  # the type of each item of a list
    optional: bool  # None allowed (a list with a default computed from others)
    default: object
    declaration: Declaration

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def shown_default(self) -> str:
        default = self.default
        if default is None:
            return self.declaration.none_means
        return " ".join(default) if isinstance(default, tuple) else str(default)

    def describe(self, short: bool = False) -> str:
        """The range or choices, as the messages and (`short`) the settings table say them."""
        spec = self.declaration
        if self.kind is bool:
            return "true or false"
        choices = spec.shown or spec.choices
        also = f"; {spec.also}" if spec.also else ""
        if short and len(choices) > 6:
            return f"{choices[0]} … {choices[-1]} ({len(choices)} layers){also}"
        if choices:
            return ", ".join(choices) + also
        if spec.low is not None:
            return f"{format_number(spec.low)} to {format_number(spec.high)}"
        return ""

    def check(self, value, counts: dict[str, int]):
        """The value, normalised, or SettingsError."""
        spec = self.declaration
        if value is None and self.optional:
            if spec.one_per:
                return (1.0 / counts[spec.one_per],) * counts[spec.one_per]
            return None
        if self.kind is tuple:
            return self._check_list(value, counts)
        return self._check_one(value, self.label, self.kind, spec.low, spec.high)

    def _check_one(self, value, label: str, kind: type, low, high):
        spec = self.declaration
        if kind is bool:
            if not isinstance(value, bool):
                raise SettingsError(f"{label} must be true or false, not {shown_value(value)}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SettingsError(f"{label} must be a whole number from {format_number(low)} to {format_number(high)}, "
                                    f"not {shown_value(value)}")
        elif kind is float:
            check_number(label, value, low, high)
            value = float(value)
        elif spec.choices and spec.low is not None and value not in spec.choices:
            value = self._choice_or_number(value, label)
        elif spec.choices:
            if value not in spec.choices:
                raise SettingsError(f"unknown {label} {shown_value(value)}; choose one of {', '.join(spec.shown or spec.choices)}")
        elif not isinstance(value, str):
            raise SettingsError(f"{label} must be text, not {shown_value(value)}")
        return value

    def _choice_or_number(self, value, label: str) -> str:
        """A whole number in range, as text, for a setting that takes one of its choices or a number."""
        spec = self.declaration
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if number is None or not spec.low <= number <= spec.high:
            raise SettingsError(f"{label} must be {' or '.join(spec.choices)}, or a whole number from {format_number(spec.low)} "
                                f"to {format_number(spec.high)}, not {shown_value(value)}")
        return str(number)

    def _check_list(self, value, counts: dict[str, int]) -> tuple:
        spec = self.declaration
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise SettingsError(f"{self.label} must be a list, not {shown_value(value)}")
        items = tuple(value)
        if spec.choices:
            if not items:
                raise SettingsError(f"choose at least one {self.label[:-1]} from {', '.join(spec.shown or spec.choices)}")
            return tuple(self._check_one(item, self.label[:-1], str, None, None) for item in items)
        expected = counts[spec.one_per]
        if len(items) != expected:
            raise SettingsError(f"{self.label}: give {expected} values, one for each of the {spec.one_per}, not {len(items)}")
        items = tuple(self._check_one(item, self.label, float, spec.low, spec.high) for item in items)
        total = sum(items)
        if total <= 0:
            raise SettingsError(f"{self.label} must not all be zero")
        # Weights that already sum to 1 stay as they are: validating twice must not move them by a rounding.
        return items if abs(total - 1) < 1e-12 else tuple(item / total for item in items)


def shown_value(value: object) -> str:
    """A refused value as a message quotes it: its repr (a list as sent, not the tuple it became),
    cut to a line's share."""
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 40 else f"{text[:36]}..."


def check_number(label: str, value: object, low: float, high: float) -> None:
    """SettingsError unless `value` is a finite int or float in [low, high] (bools are not numbers)."""
    try:
        usable = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high
    except OverflowError:  # an int beyond any float
        usable = False
    if not usable:
        raise SettingsError(f"{label} must be a number from {format_number(low)} to {format_number(high)}, not {shown_value(value)}")


def format_number(value: float) -> str:
    """512, 0.25, 2147483647: as messages and tables show a limit."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def declarations() -> Iterator[Declared]:
    hints = typing.get_type_hints(Settings)
    for setting in fields(Settings):
        kind, item, optional = _kind(hints[setting.name])
        yield Declared(setting.name, kind, item, optional, setting.default, setting.metadata["declaration"])


def declaration(name: str) -> Declared:
    return next(declared for declared in declarations() if declared.name == name)


def _kind(hint) -> tuple[type, type | None, bool]:
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    optional = isinstance(hint, types.UnionType) and len(arguments) < len(typing.get_args(hint))
    if optional:
        hint = arguments[0]
    if typing.get_origin(hint) is tuple:
        return tuple, typing.get_args(hint)[0], optional
    return hint, None, optional


def settings_table() -> str:
    """The README's table of settings, one row each, made from the declarations."""
    rows = ["| setting | CLI flag | default | range or choices | what it does |", "|---|---|---|---|---|"]
    for declared in declarations():
        flag = f"--{declared.name.replace('_', '-')}"
        if declared.kind is bool:
            flag = f"{flag} / --no-{declared.name.replace('_', '-')}"
        shown = declared.shown_default.lower() if declared.kind is bool else declared.shown_default
        rows.append(f"| `{declared.name}` | `{flag}` | {shown} | {declared.describe(short=True)} | {declared.declaration.help} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class VideoSettings:
    """What a clip adds to the settings of a picture."""

    temporal_weight: float = 20.0  # the pull toward the warped previous painted frame; 0: frames painted one by one
    fps: float = 0.0  # frames kept per second; 0: all of the input's
    later_steps: int = 0  # steps of each frame after the first (which starts from the painted one before it); 0: a third of a still's work

    _RANGES = {"temporal_weight": (0.0, 1e6), "fps": (0.0, 240.0), "later_steps": (0, 10_000)}

    def validated(self) -> VideoSettings:
        """These settings, or SettingsError naming what is allowed."""
        for declared in fields(self):
            value = getattr(self, declared.name)
            low, high = self._RANGES[declared.name]
            kind = int if declared.type == "int" else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
                raise SettingsError(f"{declared.name} must be a number{' (whole)' if kind is int else ''}, not {value!r}")
            if not low <= value <= high:
                raise SettingsError(f"{declared.name} must be between {low:g} and {high:g}, not {value:g}")
        return replace(self, later_steps=int(self.later_steps))
