"""`python -m nst CONTENT STYLE [STYLE ...] -o OUT.png`: style transfer from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from .engine import COLOR_MODES, INITS, OPTIMIZERS, PRECISIONS, Settings, SettingsError, stylize, use_memory_policy
from .images import ImageError, open_image
from .vgg import POOLINGS, RELU_LAYERS
from .weights import WeightsError

DEFAULTS = {field.name: field.default for field in fields(Settings)}
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m nst", description="Neural style transfer (Gatys et al.) with a pretrained VGG19.")
    parser.add_argument("content", help="the photo whose arrangement is kept")
    parser.add_argument("styles", nargs="+", metavar="style", help="one or more style images (paintings)")
    parser.add_argument("-o", "--output", required=True, help="where to write the result (.png, .jpg or .webp)")
    parser.add_argument("--size", type=int, default=DEFAULTS["size"], help="long side of the result in px (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimisation steps over all scales (default %(default)s)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"])
    parser.add_argument("--content-weight", type=float, default=DEFAULTS["content_weight"])
    parser.add_argument("--style-weight", type=float, default=DEFAULTS["style_weight"])
    parser.add_argument("--tv-weight", type=float, default=DEFAULTS["tv_weight"], help="total variation: smooths noise")
    parser.add_argument("--style-layers", nargs="+", default=list(DEFAULTS["style_layers"]), metavar="LAYER",
                        help=f"layers whose Gram matrices carry the style (from {', '.join(RELU_LAYERS)})")
    parser.add_argument("--style-layer-weights", type=float, nargs="+", default=None, metavar="W", help="one weight per style layer")
    parser.add_argument("--content-layer", default=DEFAULTS["content_layer"])
    parser.add_argument("--style-blend", type=float, nargs="+", default=None, metavar="W", help="one weight per style image")
    parser.add_argument("--style-scale", type=float, default=DEFAULTS["style_scale"], help="style image size relative to the result")
    parser.add_argument("--init", choices=INITS, default=DEFAULTS["init"])
    parser.add_argument("--preserve-colors", choices=COLOR_MODES, default=DEFAULTS["preserve_colors"])
    parser.add_argument("--multiscale", action=argparse.BooleanOptionalAction, default=DEFAULTS["multiscale"],
                        help="optimise coarse to fine (default on)")
    parser.add_argument("--pooling", choices=POOLINGS, default=DEFAULTS["pooling"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--device", default=DEFAULTS["device"], help="auto, cpu, cuda, cuda:1 or mps")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS["precision"])
    parser.add_argument("--weights", default=DEFAULTS["weights"], help="embedded (offline), imagenet (Hub) or a .safetensors/.pth file")
    parser.add_argument("--save-every", type=int, default=0, metavar="N", help="also write OUTPUT-stepN.png every N steps")
    parser.add_argument("--json", action="store_true", help="print one JSON line per frame to stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_FORMATS:
        parser.error(f"output must end in {', '.join(OUTPUT_FORMATS)}: {output}")
    if not output.parent.is_dir():
        parser.error(f"output folder does not exist: {output.parent}")
    if args.save_every < 0:
        parser.error("--save-every must be 0 or more")
    settings = Settings(
        steps=args.steps, size=args.size, optimizer=args.optimizer, content_weight=args.content_weight,
        style_weight=args.style_weight, tv_weight=args.tv_weight, content_layer=args.content_layer,
        style_layers=tuple(args.style_layers),
        style_layer_weights=tuple(args.style_layer_weights) if args.style_layer_weights else None,
        style_blend=tuple(args.style_blend) if args.style_blend else None, style_scale=args.style_scale,
        init=args.init, preserve_colors=args.preserve_colors, multiscale=args.multiscale, pooling=args.pooling,
        seed=args.seed, device=args.device, precision=args.precision, weights=args.weights,
        frame_interval=0.0 if args.save_every else DEFAULTS["frame_interval"])
    use_memory_policy(settings.size)
    try:
        content = open_image(args.content, "content image")
        styles = [open_image(path, "style image") for path in args.styles]
        frame = None
        for frame in stylize(content, styles, settings):
            if args.save_every and frame.step % args.save_every == 0 and not frame.done:
                frame.image.save(output.with_name(f"{output.stem}-step{frame.step}.png"))
            _report(frame, args.json)
    except (ImageError, SettingsError, WeightsError) as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if sys.stderr.isatty():
        print(file=sys.stderr)
    frame.image.save(output, OUTPUT_FORMATS[output.suffix.lower()])
    if frame.message:
        print(f"stopped early: {frame.message}; wrote {output}", file=sys.stderr)
        return 1
    return 0


def _report(frame, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"step": frame.step, "steps": frame.steps, "elapsed": round(frame.elapsed, 3),
                          "seconds_left": round(frame.seconds_left, 1), "size": list(frame.size), "losses": frame.losses,
                          "done": frame.done}), flush=True)
    width = 30
    filled = round(width * frame.step / frame.steps)
    per_step = frame.elapsed / max(frame.step, 1)
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {frame.step}/{frame.steps} {frame.size[1]}x{frame.size[0]} "
            f"{frame.elapsed:.1f}s {per_step:.2f}s/step ~{frame.seconds_left:.0f}s left loss {frame.losses['total']:.4g}")
    print(f"\r{line}" if sys.stderr.isatty() else line, end="" if sys.stderr.isatty() else "\n", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
