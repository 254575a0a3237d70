"""`python -m nst.bench`: our engine against the textbook Gatys loop, side by side in one run.

Reports, per size: seconds per step (median), the naive/ours ratio, effective GFLOP/s against this
machine's measured convolution peak, peak memory, and what a mask costs a step; with --run-steps,
whole runs with the defaults. How much photo and how much painting a picture keeps, beside the
textbook recipe, is `python -m nst.quality`'s business.

The configurations take turns step by step, so that a slow spell of a shared machine hits them
alike. The naive loop runs in a process of its own with glibc's default allocator, as a textbook
script would; ours runs here with the allocator policy of the app. Peak memory is measured in a
fresh process per configuration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from . import images, losses, reference
from .engine import stylize
from .objective import distances
from .layers import LAYER_NAMES, conv_work, up_to
from .memory import LARGE_PICTURE, reuse_freed_memory, use_memory_policy
from .devices import resolve_device
from .runtime import resolve_precision
from .settings import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, Settings, declaration
from .weights import load_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_CONTENT = EXAMPLES / "chelsea.jpg"
DEFAULT_STYLE = EXAMPLES / "starry_night.jpg"


class NaiveGatys:
    """The textbook loop (`nst.reference`): full VGG19 stack to relu5_1 in plain NCHW float32,
    out-of-place ReLU, max pooling, torch's L-BFGS, the same losses as our defaults; only the
    targets are cached."""

    def __init__(self, device: torch.device):
        weights = load_weights("embedded")
        modules = []
        for index, layer in enumerate(up_to("relu5_1")):
            if layer.kind == "conv":
                conv = nn.Conv2d(layer.inputs, layer.width, 3, padding=1)
                conv.weight.data.copy_(weights.state_dict[f"{index}.weight"])
                conv.bias.data.copy_(weights.state_dict[f"{index}.bias"])
                modules.append(conv)
            elif layer.kind == "relu":
                modules.append(nn.ReLU(inplace=False))
            else:
                modules.append(nn.MaxPool2d(2, 2))
        self.net = nn.Sequential(*modules).to(device).eval().requires_grad_(False)
        self.mean = reference.caffe_mean(device)
        self.layers = set(DEFAULT_STYLE_LAYERS) | {DEFAULT_CONTENT_LAYER}

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = reference.to_caffe(image, self.mean)
        out = {}
        for name, module in zip(LAYER_NAMES, self.net):
            x = module(x)
            if name in self.layers:
                out[name] = x
        return out

    def steps(self, content: torch.Tensor, style: torch.Tensor) -> Iterator[torch.Tensor]:
        """The picture after each L-BFGS step (one evaluation of the network and its gradient)."""
        with torch.no_grad():
            content_target = self.features(content)[DEFAULT_CONTENT_LAYER]
            style_features = self.features(style)
            targets = {}
            for layer in DEFAULT_STYLE_LAYERS:
                matrix = losses.as_matrix(style_features[layer])
                targets[layer] = losses.gram(matrix) / matrix.shape[1]
            alpha = 1.0 / float(losses.content_loss(torch.zeros_like(content_target), content_target))
            betas = [10.0 / len(DEFAULT_STYLE_LAYERS) / float(losses.style_layer_loss(torch.zeros_like(a), a, a.shape[0], 1))
                     for a in targets.values()]
        image = content.clone().requires_grad_(True)

        def loss():
            with torch.no_grad():
                image.clamp_(0, 1)
            features = self.features(image)
            content_term = losses.content_loss(features[DEFAULT_CONTENT_LAYER], content_target)
            terms = []
            for layer in DEFAULT_STYLE_LAYERS:
                matrix = losses.as_matrix(features[layer])
                terms.append(losses.style_layer_loss(losses.gram(matrix), targets[layer] * matrix.shape[1], *matrix.shape))
            return alpha * content_term + losses.style_loss(terms, betas)

        yield from reference.lbfgs_steps(image, loss)


class NaiveProcess:
    """The naive loop in a process of its own, with glibc's default allocator as a textbook script
    has it (our engine's `reuse_freed_memory` would speed it up too). Only one of the two processes
    computes at a time: each call waits for the child's answer."""

    def __init__(self, content_path: str, style_path: str, device: torch.device):
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_naive_worker, args=(child_end, content_path, style_path, str(device)), daemon=True)
        self.process.start()

    def _ask(self, command: str, argument=None):
        self.connection.send((command, argument))
        return self.connection.recv()

    def steps(self, side: int) -> Iterator[float]:
        """The child's own seconds for each next step at this size."""
        self._ask("start", side)
        while True:
            yield self._ask("step")

    def close(self) -> None:
        self.connection.send(("stop", None))
        self.process.join(timeout=30)


def _naive_worker(connection, content_path: str, style_path: str, device_name: str) -> None:
    device = torch.device(device_name)
    naive = NaiveGatys(device)
    content, style = images.open_image(content_path), images.open_image(style_path)
    steps = None
    while True:
        command, argument = connection.recv()
        if command == "start":
            steps = naive.steps(images.load_tensor(content, argument, device), images.load_tensor(style, argument, device))
            connection.send(None)
        elif command == "step":
            _sync(device)
            start = time.perf_counter()
            next(steps)
            _sync(device)
            connection.send(time.perf_counter() - start)
        else:
            return


def measure_peak_gflops(device: torch.device, seconds: float = 2.0) -> float:
    """Best convolution throughput seen on a VGG-like 3x3 layer: this machine's practical peak."""
    x = torch.randn(1, 256, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(256, 256, 3, padding=1).to(device).to(memory_format=torch.channels_last).requires_grad_(False)
    flops = 2 * 64 * 64 * 256 * 256 * 9
    best, deadline = 0.0, time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < deadline:
            _sync(device)
            start = time.perf_counter()
            for _ in range(4):
                conv(x)
            _sync(device)
            best = max(best, 4 * flops / (time.perf_counter() - start) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak resident memory (CPU: VmHWM, reset through /proc/self/clear_refs) or CUDA memory."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif os.path.exists("/proc/self/clear_refs"):
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step_iterator(config: str, side: int, content, style, device: torch.device, naive: NaiveGatys | NaiveProcess | None) -> Iterator:
    """One optimisation step per next(): the naive loop, or our engine single scale in a precision.

    "ours_fp32_direct" is our engine with oneDNN's direct convolutions instead of Winograd's;
    "ours_fp32_masked" paints the style on the left half only (a mask: the Gram matrix of the painted region only).
    """
    if config == "naive" and isinstance(naive, NaiveProcess):
        return naive.steps(side)
    if config == "naive":
        return naive.steps(images.load_tensor(content, side, device), images.load_tensor(style, side, device))
    precision = config.split("_")[1]
    settings = Settings(size=side, device=str(device), multiscale=False, precision=precision, steps=declaration("steps").declaration.high,
                        frame_interval=0, winograd="off" if config.endswith("_direct") else "auto")
    mask = None
    if config.endswith("_masked"):
        mask = Image.new("L", content.size, 0)
        mask.paste(255, (0, 0, content.width // 2, content.height))
    return stylize(content, style, settings, mask=mask)


def interleaved_step_times(iterators: dict[str, Iterator], steps: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each iterator, taking turns step by step so that all of them see the same
    machine: a slow spell of a shared host slows all alike instead of one of them. The first step
    of each (setup, targets) is not timed. An iterator that yields a number reports its own time."""
    for iterator in iterators.values():
        next(iterator)
    times: dict[str, list[float]] = {name: [] for name in iterators}
    for _ in range(steps):
        for name, iterator in iterators.items():
            _sync(device)
            start = time.perf_counter()
            reported = next(iterator)
            _sync(device)
            times[name].append(reported if isinstance(reported, float) else time.perf_counter() - start)
    for iterator in iterators.values():
        if hasattr(iterator, "close"):
            iterator.close()
    return times


def peak_memory_mb(config: str, side: int, content_path: str, style_path: str, device: str, steps: int = 3) -> float:
    """Peak memory of `steps` steps of one configuration in a fresh process, with the allocator
    policy the CLI uses at that size (the naive loop keeps glibc's own)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_peak_memory_child, (config, side, content_path, style_path, device, steps))


def _peak_memory_child(config: str, side: int, content_path: str, style_path: str, device_name: str, steps: int) -> float:
    if config != "naive":
        use_memory_policy(side)
    device = torch.device(device_name)
    content, style = images.open_image(content_path), images.open_image(style_path)
    naive = NaiveGatys(device) if config == "naive" else None
    peak = PeakMemory(device)
    iterator = _step_iterator(config, side, content, style, device, naive)
    next(iterator)  # the first step: setup, and cuDNN's autotuning, which tries large workspaces
    _sync(device)
    peak.reset()
    for _ in range(steps):
        next(iterator)
    return peak.peak_mb()


def bench_size(side: int, content_path: str, style_path: str, device, steps: int, naive: NaiveProcess | None, precisions) -> dict:
    content, style = images.open_image(content_path), images.open_image(style_path)
    height, width = images.working_size(content.width, content.height, side)
    # two flops a multiply-add, forward and gradient to the input (no weight gradients)
    flops = 2 * 2 * conv_work(height, width, "relu5_1")
    row: dict = {"size": side, "pixels": f"{width}x{height}", "gflop_per_step": flops / 1e9}
    configs = (["naive"] if naive is not None else []) + [f"ours_{precision}" for precision in precisions]
    if device.type == "cpu" and "fp32" in precisions and side <= LARGE_PICTURE:
        configs += ["ours_fp32_direct", "ours_fp32_masked"]
    iterators = {config: _step_iterator(config, side, content, style, device, naive) for config in configs}
    times = interleaved_step_times(iterators, steps, device)
    for config in configs:
        median = statistics.median(times[config])
        row[config] = {"s_per_step": median, "gflops": flops / median / 1e9,
                       "peak_mb": peak_memory_mb(config, side, content_path, style_path, str(device))}
    if naive is not None:
        for config in configs[1:]:
            row[f"naive_over_{config}"] = row["naive"]["s_per_step"] / row[config]["s_per_step"]
    if "ours_fp32_masked" in configs:
        row["masked_over_ours_fp32"] = row["ours_fp32_masked"]["s_per_step"] / row["ours_fp32"]["s_per_step"]
    return row


def time_run(content, style, device, side: int, steps: int, precision: str) -> dict:
    """Wall clock of one whole default run (model already loaded), and how stylised it ends."""
    settings = Settings(size=side, steps=steps, device=str(device), precision=precision, frame_interval=3600)
    list(stylize(content, style, replace(settings, steps=min(steps, 20))))  # warm-up: kernels, autotuning
    results = {"size": side, "steps": steps, "precision": precision}
    for optimizer in ("lbfgs", "adam"):
        _sync(device)
        start = time.perf_counter()
        final = list(stylize(content, style, replace(settings, optimizer=optimizer)))[-1]
        _sync(device)
        results[optimizer] = {"seconds": time.perf_counter() - start, "distance": distances(final.image, content, style, settings)}
    return results


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nst.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--content", default=str(DEFAULT_CONTENT))
    parser.add_argument("--style", default=str(DEFAULT_STYLE))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration, taken in turns")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=None, help="fp32 and/or bf16 (default: fp32 and the auto choice)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive reference in the per-step table")
    parser.add_argument("--run-size", type=int, default=512, help="size of the whole runs timed by --run-steps")
    parser.add_argument("--run-steps", type=int, default=0,
                        help="also time whole runs of this many steps with the defaults at --run-size, per precision")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the table")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    precisions = args.precisions or sorted({"fp32", resolve_precision("auto", device)})
    try:
        content = images.open_image(args.content, "content image")
        style = images.open_image(args.style, "style image")
    except images.ImageError as error:  # installed without the repository's examples: name the pictures
        parser.error(f"{error} (give --content and --style)")
    reuse_freed_memory()  # as the app and the CLI up to 768 px do; the naive loop's process keeps glibc's default
    report: dict = {"machine": machine(device), "device": device.type, "torch": torch.__version__}
    report["peak_conv_gflops"] = measure_peak_gflops(device)
    log(f"peak conv throughput: {report['peak_conv_gflops']:.0f} GFLOP/s on {report['machine']}")
    naive = None if args.no_naive else NaiveProcess(args.content, args.style, device)
    report["sizes"] = []
    for side in args.sizes:
        row = bench_size(side, args.content, args.style, device, args.steps, None if args.no_naive else naive, precisions)
        for value in row.values():
            if isinstance(value, dict):
                value["fraction_of_peak"] = value["gflops"] / report["peak_conv_gflops"]
        report["sizes"].append(row)
        log(json.dumps(row))
    if args.run_steps:
        report["runs"] = [time_run(content, style, device, args.run_size, args.run_steps, precision) for precision in precisions]
        log(json.dumps(report["runs"]))
    if naive is not None:
        naive.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def format_table(report: dict) -> str:
    lines = [f"{report['machine']} ({report['device']}), torch {report['torch']}; "
             f"measured conv peak {report['peak_conv_gflops']:.0f} GFLOP/s", "",
             "| size | config | s/step (median) | naive/ours | GFLOP/s | of peak | peak memory MB |",
             "|---|---|---|---|---|---|---|"]
    for row in report["sizes"]:
        for name, value in row.items():
            if not isinstance(value, dict):
                continue
            ratio = row.get(f"naive_over_{name}")
            lines.append(f"| {row['pixels']} | {name} | {value['s_per_step']:.4g} | {f'{ratio:.2f}x' if ratio else '-'} | "
                         f"{value['gflops']:.0f} | {value['fraction_of_peak']:.0%} | {value['peak_mb']:.0f} |")
    for row in report["sizes"]:
        if "masked_over_ours_fp32" in row:
            lines.append(f"\nAt {row['pixels']} a masked step (the style on half the picture) took "
                         f"{row['masked_over_ours_fp32']:.2f}x an unmasked one.")

    def dist(d):
        return f"style {d['style']:.4f}, content {d['content']:.3f}"

    for run in report.get("runs", []):
        lines.append(f"- whole run, {run['steps']} steps at {run['size']} px, {run['precision']}: " + "; ".join(
            f"{name} {run[name]['seconds']:.1f} s ({dist(run[name]['distance'])})" for name in ("lbfgs", "adam")))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
