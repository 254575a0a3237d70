"""Gatys style transfer as a generator of progress frames.

How the user-facing weights map onto the seed's loss: the content term 1/2 sum (F - P)^2 grows with
the number of positions M, while each style layer term 1/(4 N^2 M^2) sum (G - A)^2 does not; and
with the Caffe weights the style layer terms differ by five orders of magnitude between relu1_1 and
relu4_1, while the ImageNet weights produce activations on another scale altogether. So the engine
measures each loss term against its own target:

    alpha   = content_weight / (1/2 sum P^2)
    beta_l  = style_weight * w_l / (1/(4 N^2 M^2) sum A_l^2)

The weighted content term is then content_weight times the relative squared error of the content
activations, and each style layer adds style_weight * w_l times the relative squared error of its
Gram matrix. The same slider values give the same look at 128 px and 2048 px, whichever weights
are loaded, and equal layer weights w_l really give each layer an equal say.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from PIL import Image
from torch import Tensor

from . import images, losses
from .images import ImageError
from .lbfgs import LBFGS
from .vgg import LAYER_NAMES, POOLINGS, RELU_LAYERS, load_model
from .weights import SOURCES, describe_sources

DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_CONTENT_LAYER = "relu4_2"
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
COLOR_MODES = ("none", "luminance", "histogram")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_SIZE = 2048
MAX_STEPS = 10_000
MAX_WEIGHT = 1e12
# Adam's step in RGB units of [0, 1] (about 4 grey levels), for each scale of the schedule.
ADAM_LEARNING_RATE = 4 / 255
MIN_SCALE_SIDE = 128
# ... and the coarsest scale's short side at least this: a 6:1 picture starts at 384x64, not 128x21.
MIN_SCALE_SHORT_SIDE = 64
# Each scale gets this many times the steps of the next finer one.
SCALE_SHARE_RATIO = 1.8
# Above this long side memory comes before speed, to keep a 1024 px run on CPU within 2.5 GB: no
# Winograd convolutions (their transformed filters hold 200 MB), and `use_memory_policy` hands
# freed blocks back to the system instead of keeping them for the next step.
LARGE_PICTURE = 768
# A step on twice the side (4 times the pixels) takes this many times as long: measured on two cores
# with the defaults, 2.4 from 128 to 256 px and 2.9 to 3.3 from 256 to 512 px.
STEP_COST_PER_DOUBLING = 2.8
# Scales with at least this many steps on CUDA run each step as one replayed CUDA graph.
CUDA_GRAPH_MIN_STEPS = 10
LBFGS_HISTORY = 20
LBFGS_MEMORY = 200 * 2**20  # bytes for L-BFGS's history: each pair holds two image-sized vectors

class SettingsError(ValueError):
    """A setting out of range; the message names the allowed values."""


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a result. Defaults are chosen for a good 512 px picture fast on CPU."""

    steps: int = 150
    size: int = 512
    optimizer: str = "lbfgs"
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.0
    content_layer: str = DEFAULT_CONTENT_LAYER
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None  # None: equal, 1 / number of layers
    style_blend: tuple[float, ...] | None = None  # None: all style images alike
    style_scale: float = 1.0
    init: str = "content"
    preserve_colors: str = "none"
    multiscale: bool = True
    pooling: str = "max"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    weights: str = "embedded"
    frame_interval: float = 0.5

    def validated(self, style_count: int = 1) -> Settings:
        """These settings with tuples normalised, or SettingsError naming what is allowed."""
        _check_int("steps", self.steps, 1, MAX_STEPS)
        _check_int("size", self.size, images.MIN_SIDE, MAX_SIZE)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        for name in ("content_weight", "style_weight", "tv_weight"):
            check_number(name.replace("_", " "), getattr(self, name), 0, MAX_WEIGHT)
        check_number("style scale", self.style_scale, 0.1, 4.0)
        check_number("frame interval", self.frame_interval, 0, 3600)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("init", self.init, INITS)
        _check_choice("preserve colors", self.preserve_colors, COLOR_MODES)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("content layer", self.content_layer, LAYER_NAMES, shown=RELU_LAYERS)
        style_layers = tuple(self.style_layers)
        if not style_layers:
            raise SettingsError(f"choose at least one style layer from {', '.join(RELU_LAYERS)}")
        for layer in style_layers:
            _check_choice("style layer", layer, LAYER_NAMES, shown=RELU_LAYERS)
        if len(set(style_layers)) != len(style_layers):
            raise SettingsError("each style layer may be chosen once")
        layer_weights = _check_weights("style layer weights", self.style_layer_weights, len(style_layers))
        blend = _check_weights("style blend", self.style_blend, style_count)
        if not isinstance(self.multiscale, bool):
            raise SettingsError("multiscale must be true or false")
        if self.weights not in SOURCES and not str(self.weights).endswith((".safetensors", ".pth", ".pt")):
            raise SettingsError(f"weights must be {describe_sources()}")
        resolve_device(self.device)
        return replace(self, style_layers=style_layers, style_layer_weights=layer_weights, style_blend=blend)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}, not {value!r}")


def check_number(name: str, value: object, low: float, high: float) -> None:
    """SettingsError unless `value` is a finite int or float in [low, high] (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise SettingsError(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")


def _check_choice(name: str, value: object, allowed: Sequence[str], shown: Sequence[str] | None = None) -> None:
    if value not in allowed:
        raise SettingsError(f"unknown {name} {value!r}; choose one of {', '.join(shown or allowed)}")


def _check_weights(name: str, weights: Sequence[float] | None, expected: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0 / expected,) * expected
    weights = tuple(weights)
    if len(weights) != expected:
        raise SettingsError(f"{name}: give {expected} values, one for each, not {len(weights)}")
    for value in weights:
        check_number(name, value, 0, MAX_WEIGHT)
    total = sum(weights)
    if total <= 0:
        raise SettingsError(f"{name} must not all be zero")
    return tuple(value / total for value in weights)


def available_devices() -> list[str]:
    """The devices this machine has, as `--device` takes them: cpu, then cuda:0 ..., then mps."""
    devices = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise SettingsError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from error
    here = available_devices()
    index = device.index or 0
    if not any(present.split(":")[0] == device.type and int(present.partition(":")[2] or 0) == index for present in here):
        raise SettingsError(f"device {name!r} is not available here; this machine has {', '.join(here)} (or use auto)")
    return device


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 convolutions that run faster than fp32 on this CPU."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def scale_schedule(size: int, steps: int, multiscale: bool, aspect: float = 1.0) -> list[tuple[int, int]]:
    """[(long side, steps)] coarse to fine, ending at `size`; the steps add up to `steps`.

    The sides grow geometrically from MIN_SCALE_SIDE, by at most 2x a scale (128, 256, 512 for 512;
    128, 222, 384 for 384); for a picture with a long side `aspect` times its short side, from where
    the short side is MIN_SCALE_SHORT_SIDE if that is larger (384, 512 at 6:1). Coarse scales cost a
    fraction as much per step as the next, so they take the larger share of the steps.
    """
    coarsest = max(MIN_SCALE_SIDE, math.ceil(MIN_SCALE_SHORT_SIDE * aspect))
    count = math.ceil(math.log2(size / coarsest)) + 1 if multiscale and size > coarsest else 1
    sides = [round(size * (coarsest / size) ** ((count - 1 - i) / (count - 1))) for i in range(count - 1)] + [size]
    sides = sides[-steps:]
    shares = [SCALE_SHARE_RATIO**i for i in range(len(sides) - 1, -1, -1)]
    counts = [int(steps * share / sum(shares)) for share in shares]
    counts[-1] = steps - sum(counts[:-1])
    return [(side, n) for side, n in zip(sides, counts) if n > 0]


@dataclass
class Frame:
    """One progress report. `image` is the current picture at the current scale."""

    step: int
    steps: int
    losses: dict[str, float]
    elapsed: float
    image: Image.Image
    done: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    message: str = ""
    size: tuple[int, int] = field(default=(0, 0))  # (height, width) of `image`
    seconds_left: float = 0.0  # to the end of the run, by `estimate_seconds_left`; 0 when done


def stylize(content: Image.Image, styles: Image.Image | Sequence[Image.Image], settings: Settings = Settings(),
            on_step: Callable[[int, Tensor], None] | None = None) -> Iterator[Frame]:
    """Optimise a picture with `content`'s arrangement in the style of `styles`, yielding Frames.

    Frames come at most every `settings.frame_interval` seconds, and always at the end (`done`).
    Closing the generator stops the work at the frame it is paused on; no VGG pass runs after that.
    `on_step(step, picture)`, if given, is called after every step with the picture being optimised
    (at the current scale, RGB in [0, 1]; the tensor itself, not a copy).
    """
    styles = [styles] if isinstance(styles, Image.Image) else list(styles)
    if not styles:
        raise ImageError("give at least one style image")
    settings = settings.validated(style_count=len(styles))
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    started = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = load_model(settings.weights, settings.pooling, str(device))

    content_full = images.load_tensor(content, settings.size, device, "content image")
    style_side = round(settings.size * settings.style_scale)
    style_full = [images.load_style_tensor(style, style_side, device) for style in styles]
    colour_source = content_full
    if settings.preserve_colors == "histogram":
        style_full = [images.match_histogram(style, content_full) for style in style_full]
    elif settings.preserve_colors == "luminance":
        content_full = images.luminance(content_full)
        style_full = [images.match_luminance(images.luminance(style), content_full) for style in style_full]

    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    # No cast cache: CUDA graphs cannot capture it, and frozen weights are cast each pass anyway.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)
    winograd = device.type == "cpu" and precision == "fp32" and settings.size <= LARGE_PICTURE
    step = 0
    image: Tensor | None = None
    last_good, last_good_step = None, 0
    last_frame = -math.inf
    values: dict[str, Tensor] = {}
    # The first step whose loss was not finite (0: none yet): kept on the device, read only where
    # a picture is about to be shown or carried to the next scale, so that no step waits for a sync.
    first_bad_step = torch.zeros((), dtype=torch.long, device=device)

    aspect = max(content_full.shape[-2:]) / min(content_full.shape[-2:])
    schedule = scale_schedule(settings.size, settings.steps, settings.multiscale, aspect)

    def frame(current: Tensor, values: dict[str, Tensor], done: bool, message: str = "", seconds_left: float = 0.0) -> Frame:
        if settings.preserve_colors == "luminance":
            current = images.with_chroma(current, images.resize(colour_source, tuple(current.shape[-2:])))
        return Frame(step, settings.steps, {name: float(value.detach()) for name, value in values.items()},
                     time.perf_counter() - started, images.to_pil(current), done, device.type, precision, message,
                     tuple(current.shape[-2:]), seconds_left)

    def failure() -> str:
        """Empty while every loss so far and the picture are finite, else what went wrong."""
        bad_step = int(first_bad_step)
        if not bad_step and bool(torch.isfinite(image).all()):
            return ""
        what = f"the loss became infinite or NaN at step {bad_step}" if bad_step else f"the picture became NaN at step {step}"
        return f"{what}; showing the last good picture, from step {last_good_step} (try lower weights or fp32)"

    for scale_index, (side, scale_steps) in enumerate(schedule):
        height, width = images.working_size(content_full.shape[-1], content_full.shape[-2], side, "content image")
        content_scaled = images.resize(content_full, (height, width))
        objective = _Objective(model, content_scaled, style_full, settings, autocast, winograd)
        if image is None:
            image = _initial_image(settings.init, content_scaled, style_full[0], generator)
        elif message := failure():
            yield frame(last_good, values, True, message)
            return
        else:
            image = images.resize(image.detach(), (height, width))
        # The image stays contiguous (L-BFGS flattens it); the channels-last weights make every
        # activation after the first convolution channels-last.
        image = image.contiguous().requires_grad_(True)
        optimizer = _optimizer(settings.optimizer, image)
        last_good, last_good_step = image.detach().clone(), step
        values = {}
        closure = _closure(optimizer, objective, image, values)
        if device.type == "cuda" and scale_steps >= CUDA_GRAPH_MIN_STEPS:
            closure = _replayed(closure)

        scale_started = time.perf_counter()
        for scale_step in range(1, scale_steps + 1):
            optimizer.step(closure)
            if settings.optimizer == "adam":  # L-BFGS projects its own steps onto [0, 1]
                with torch.no_grad():
                    image.clamp_(0, 1)
            step += 1
            first_bad_step.copy_(torch.where((first_bad_step == 0) & ~torch.isfinite(values["total"]), step, first_bad_step))
            if on_step is not None:
                on_step(step, image.detach())
            final = step == settings.steps
            now = time.perf_counter()
            if not final and now - last_frame < settings.frame_interval:
                continue
            last_frame = now
            reported = {name: value.detach().clone() for name, value in values.items()}
            if message := failure():
                yield frame(last_good, reported, True, message)
                return
            last_good, last_good_step = image.detach().clone(), step
            yield frame(last_good, reported, final,
                        seconds_left=estimate_seconds_left(schedule, scale_index, scale_step, now - scale_started))


def estimate_seconds_left(schedule: list[tuple[int, int]], scale_index: int, scale_step: int, scale_seconds: float) -> float:
    """Estimated seconds to the end of `schedule`, `scale_step` steps and `scale_seconds` into a scale.

    Steps on a scale with twice the side are taken to cost STEP_COST_PER_DOUBLING times as much.
    """
    side, steps = schedule[scale_index]
    per_step = scale_seconds / scale_step
    later = sum(n * STEP_COST_PER_DOUBLING ** math.log2(other / side) for other, n in schedule[scale_index + 1:])
    return per_step * (steps - scale_step + later)


class _Objective:
    """The weighted loss terms at one scale, with the targets computed once."""

    def __init__(self, model, content: Tensor, styles: list[Tensor], settings: Settings, autocast, winograd: bool = False):
        self.model, self.settings, self.autocast, self.winograd = model, settings, autocast, winograd
        self.layers = set(settings.style_layers) | {settings.content_layer}
        style_side = round(max(content.shape[-2:]) * settings.style_scale)
        with torch.inference_mode(), autocast:
            self.content_target = model(content, [settings.content_layer], winograd)[settings.content_layer].float().clone()
            self.grams: dict[str, Tensor] = {}  # blended Gram matrices per position: A / M
            for style, blend in zip(styles, settings.style_blend, strict=True):
                height, width = images.style_size(style.shape[-1], style.shape[-2], style_side)
                scaled = images.resize(style, (height, width))
                features = model(scaled, settings.style_layers, winograd)
                for layer in settings.style_layers:
                    matrix = losses.as_matrix(features[layer])
                    self.grams[layer] = self.grams.get(layer, 0) + blend * losses.gram(matrix) / matrix.shape[1]
            zero = torch.zeros_like(self.content_target)
            self.alpha = settings.content_weight / max(float(losses.content_loss(zero, self.content_target)), 1e-12)
            self.betas = []
            for layer, weight in zip(settings.style_layers, settings.style_layer_weights, strict=True):
                gram = self.grams[layer]
                energy = max(float(losses.style_layer_loss(torch.zeros_like(gram), gram, gram.shape[0], 1)), 1e-12)
                self.betas.append(settings.style_weight * weight / energy)

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        settings = self.settings
        with self.autocast:
            features = self.model(image, self.layers, self.winograd)
        content = losses.content_loss(features[settings.content_layer], self.content_target)
        layer_terms = []
        for layer in settings.style_layers:
            matrix = losses.as_matrix(features[layer])
            filters, positions = matrix.shape
            layer_terms.append(losses.style_layer_loss(losses.gram(matrix), self.grams[layer] * positions, filters, positions))
        style = losses.style_loss(layer_terms, self.betas)
        tv = losses.total_variation(image) if settings.tv_weight else image.new_zeros(())
        total = losses.total_loss(content, style, tv, self.alpha, 1.0, settings.tv_weight)
        return {"content": self.alpha * content, "style": style, "tv": settings.tv_weight * tv, "total": total}


def distances(image: Image.Image, content: Image.Image, styles: Image.Image | Sequence[Image.Image],
              settings: Settings = Settings()) -> dict[str, float]:
    """How far `image` is from the content and the style(s), at `image`'s size, by the same network.

    content: relative squared error of the content-layer activations; style: the layer-weighted
    relative squared error of the Gram matrices (the engine's loss terms with weights 1).
    """
    styles = [styles] if isinstance(styles, Image.Image) else list(styles)
    settings = replace(settings, content_weight=1.0, style_weight=1.0, tv_weight=0.0).validated(len(styles))
    device = resolve_device(settings.device)
    model = load_model(settings.weights, settings.pooling, str(device))
    generated = images.to_tensor(image, device)
    content_tensor = images.resize(images.to_tensor(content, device), tuple(generated.shape[-2:]))
    objective = _Objective(model, content_tensor,
                           [images.to_tensor(style, device) for style in styles], settings,
                           torch.autocast(device.type, enabled=False))
    with torch.inference_mode():
        terms = objective(generated)
    return {"content": float(terms["content"]), "style": float(terms["style"])}


def _closure(optimizer: torch.optim.Optimizer | LBFGS, objective: _Objective, image: Tensor, values: dict[str, Tensor]):
    """One evaluation: the loss terms into `values`, gradients into `image.grad`; returns the total."""

    def closure() -> Tensor:
        optimizer.zero_grad()
        values.clear()  # drop the last evaluation's autograd graph before building the next
        values.update(objective(image))
        values["total"].backward()
        return values["total"]

    return closure


def _replayed(closure):
    """The closure captured once as a CUDA graph: each later call replays all of its kernels at once.

    At 512 px a step is about a thousand small kernels, and launching them one by one from Python
    took longer than running them on an H200. The graph reads the image and writes its gradient
    and the loss terms where the capture put them, so the optimiser keeps working in place.
    """
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(2):  # warm up outside the capture: cuDNN's autotuning, the allocator's pools
            closure()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            total = closure()
    except RuntimeError as error:  # an op this torch build cannot capture: run step by step instead
        warnings.warn(f"CUDA graph capture failed, stepping without it: {error}", stacklevel=2)
        return closure

    def replay() -> Tensor:
        graph.replay()
        return total

    return replay


def use_memory_policy(size: int) -> None:
    """The allocator policy for a process that makes pictures of this long side (see LARGE_PICTURE)."""
    if size > LARGE_PICTURE:
        limit_heap_growth()
    else:
        reuse_freed_memory()


def reuse_freed_memory() -> None:
    """Keep freed memory in the process for the next allocation instead of handing it back.

    By default glibc maps every block over 32 MB fresh from the system and returns it when freed,
    and fresh pages cost a page fault and zeroing on first touch: about 0.2 ms per MB on these
    machines, 400 MB a step at 512 px. This policy serves every block from the process heap, one
    heap for all threads, and never trims it: a 512 px step runs 5-10% faster, while the process
    keeps its peak size until `release_freed_memory`. Process-wide, so the caller decides (the app,
    and the CLI up to 768 px).
    """
    _glibc("mallopt", M_ARENA_MAX, 1)
    _glibc("mallopt", M_MMAP_MAX, 0)
    _glibc("mallopt", M_TRIM_THRESHOLD, 2**31 - 1)


def release_freed_memory() -> None:
    """Hand the memory freed since the last call back to the system (glibc's malloc_trim).

    With `reuse_freed_memory` the process keeps its peak size; a server calls this between runs so
    that an idle process shrinks back, at the cost of faulting pages in again on the next run's
    first step.
    """
    _glibc("malloc_trim", 0)


def limit_heap_growth() -> None:
    """Serve every allocation over 128 KB from fresh pages that go back to the system when freed.

    glibc raises that threshold as large blocks are freed, after which the picture-sized buffers of
    each step come from the heap and fragment it: on 1024 px pictures the process grew by about 70 MB
    a step beyond L-BFGS's history. Fresh pages cost page faults, which only large pictures amortise,
    and the policy is process-wide: so the caller decides (the CLI does, for large pictures).
    """
    _glibc("mallopt", M_MMAP_THRESHOLD, 128 * 1024)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8


def _glibc(function: str, *arguments: int) -> None:
    try:
        import ctypes

        getattr(ctypes.CDLL("libc.so.6"), function)(*arguments)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def warm_up(settings: Settings = Settings()) -> None:
    """Load the network, its Winograd filters and the optimisers' code now (the first torch optimiser
    made in a process imports torch._dynamo), so that the first request starts at full speed."""
    settings = settings.validated()
    device = resolve_device(settings.device)
    model = load_model(settings.weights, settings.pooling, str(device))
    if device.type == "cpu" and resolve_precision(settings.precision, device) == "fp32":
        with torch.inference_mode():
            model(torch.zeros(1, 3, 32, 32), {*settings.style_layers, settings.content_layer}, winograd=True)
    for name in OPTIMIZERS:
        _optimizer(name, torch.zeros(1, requires_grad=True))


def _initial_image(init: str, content: Tensor, style: Tensor, generator: torch.Generator) -> Tensor:
    if init == "content":
        return content.detach().clone()
    if init == "style":
        return images.resize(style, tuple(content.shape[-2:])).detach().clone()
    return torch.rand(content.shape, generator=generator).to(content.device)


def _optimizer(name: str, image: Tensor) -> torch.optim.Optimizer | LBFGS:
    if name == "adam":
        return torch.optim.Adam([image], lr=ADAM_LEARNING_RATE, fused=image.is_cuda)
    history = max(5, min(LBFGS_HISTORY, LBFGS_MEMORY // (2 * image.numel() * image.element_size())))
    return LBFGS(image, history=history, bounds=(0.0, 1.0))
