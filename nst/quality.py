"""`python -m nst.quality`: is it still the photo, and is it the painting? Measured on a panel of
photo x painting pairs, beside the textbook anchor.

For each pair, at one size (512 px by default): our picture with the defaults (or --set overrides)
and the anchor's, their content and style distances by `distances()` with a fixed yardstick (equal
weights on relu1_1 ... relu5_1, content at relu4_2, whatever the settings being judged use), the
seconds each took, a JSON file, and one contact sheet of all pairs (photo | painting | anchor | ours,
each labelled with its figures) to be looked at.

The anchor is jcjohnson/neural-style's recipe at its default weights, written here: content
5 x mean((F - P)^2) at relu4_2; style 100 x sum over relu1_1 ... relu5_1 of mean((G - A)^2), with
Gram matrices divided by C H W; total variation 1e-3; pixels in Caffe's 0-255 BGR units; torch's
L-BFGS (history 100, no line search) for 300 iterations from the content image: the textbook loop of
`nst.reference`. It runs on our VGG19 forward pass (Winograd's convolutions, the same function as
the direct ones to float32 rounding).
The panel's images are in examples/panel (credits in examples/CREDITS.md); this needs the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from . import images, losses, reference
from .engine import stylize
from .memory import reuse_freed_memory
from .objective import YARDSTICK, distances
from .settings import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, Settings, SettingsError, declaration
from .vgg import load_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PANEL_FOLDER = EXAMPLES / "panel"
VALIDATION_FOLDER = EXAMPLES / "validation"


@dataclass(frozen=True)
class Pair:
    content: str  # a file in examples/panel, examples/validation or examples/, without .jpg
    style: str
    hard: str  # what the pair tests

    @property
    def name(self) -> str:
        return f"{self.content}-{self.style}"


PANEL = (
    Pair("hopper", "klimt_kiss", "portrait; the style is faces and gold discs"),
    Pair("cameraman", "richmond_bronte", "portrait; the style is a face drawing"),
    Pair("astronaut", "munch_scream", "portrait; the style has a face"),
    Pair("bridge", "starry_night", "building at night; post-impressionist strokes and round stars"),
    Pair("temple", "codex_initial", "building; the style is letters and a dragon"),
    Pair("skyline", "cent_coin", "buildings; the style is one disc with a face and letters"),
    Pair("mountains", "simberg_angel", "landscape; the style has faces and figures"),
    Pair("canyon", "colour_stripes", "landscape; abstract colour bands"),
    Pair("stream", "stone_wall", "landscape; the style is a stone wall"),
    Pair("citrus", "tartan", "close-up of round fruit; woven texture"),
    Pair("fig", "greek_coins", "close-up; the style is discs on black"),
    Pair("dandelions", "codex_letters", "close-up; the style is handwritten letters"),
    Pair("tiger", "vitruvian", "animal; the style is a drawn figure in a circle, with handwriting"),
    Pair("bee", "charter_seals", "animal; the style is script and round seals"),
)
# Never used to choose a setting: where the defaults chosen on the panel are checked.
VALIDATION = (
    Pair("jesper", "vangogh_tanguy", "portrait; the style is a face with brush strokes and prints behind it"),
    Pair("anne_helene", "arcimboldo_spring", "portrait, whole figure; the style is a face made of flowers"),
    Pair("couple", "renoir_galette", "two faces; the style is a crowd of faces"),
    Pair("hawa_mahal", "lady_unicorn", "facade of many windows; the style is a tapestry with figures and animals"),
    Pair("berlin_cathedral", "kandinsky_comp8", "building with domes; abstract discs and lines"),
    Pair("lake_boats", "hokusai_wave", "lake with boats at sunset; woodblock print of waves, boats and a mountain"),
    Pair("autumn_hills", "bruegel_harvesters", "landscape; the style is a landscape with figures"),
    Pair("machu_picchu", "mate_elephants", "mountains and ruins; a mirrored pattern of elephants"),
    Pair("pizza", "bosschaert_flowers", "food close-up; a flower still life on dark"),
    Pair("coffee", "hiroshige_fish", "close-up of a cup; the style is a print with fish and calligraphy"),
    Pair("red_panda", "durer_lion", "animal; the style is a painted animal"),
    Pair("kingfisher", "gauguin_arearea", "bird; flat colours, figures and a red dog"),
    # These styles are textures and photographs, not paintings: the kind of style users also drop in.
    Pair("didgeridoo_player", "goat_hair", "portrait, whole figure; the style is a photograph of long black and white hair"),
    Pair("reims_cathedral", "tree_bark", "gothic building against a blue sky; the style is a tree-bark texture"),
    Pair("great_wall", "earth_satellite", "mountain landscape with a wall; the style is a satellite photograph of the Earth"),
    Pair("paint_brushes", "ihc_micrograph", "close-up of brushes; the style is a micrograph of stained tissue"),
    Pair("hedgehog", "burlap", "animal in grass; the style is a woven cloth texture"),
    Pair("bata_drums", "gravel", "objects on grass; the style is a grey gravel photograph"),
    Pair("mariachi", "retina_fundus", "faces and instruments; the style is a medical photograph, a red disc of retina on black"),
)
SPLITS = {"panel": PANEL, "validation": VALIDATION}


def picture_path(name: str) -> Path:
    for folder in (PANEL_FOLDER, VALIDATION_FOLDER, EXAMPLES):
        if (folder / f"{name}.jpg").is_file():
            return folder / f"{name}.jpg"
    raise FileNotFoundError(f"{name}.jpg is not in {PANEL_FOLDER}, {VALIDATION_FOLDER} or {EXAMPLES} "
                            "(python -m nst.quality needs the repository)")


def anchor(content: Image.Image, style: Image.Image, size: int, steps: int = 300) -> Image.Image:
    """jcjohnson/neural-style's default recipe (see the module's docstring), by the textbook loop."""
    model = load_model()
    layers = set(DEFAULT_STYLE_LAYERS) | {DEFAULT_CONTENT_LAYER}
    mean = reference.caffe_mean("cpu")

    def grams(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        result = {}
        for layer in DEFAULT_STYLE_LAYERS:
            matrix = losses.as_matrix(features[layer])
            result[layer] = losses.gram(matrix) / matrix.numel()
        return result

    content_tensor = images.load_tensor(content, size, "cpu")
    with torch.no_grad():
        content_target = model(content_tensor, [DEFAULT_CONTENT_LAYER], winograd=True)[DEFAULT_CONTENT_LAYER].clone()
        style_targets = grams(model(images.load_style_tensor(style, size, "cpu"), DEFAULT_STYLE_LAYERS, winograd=True))
    pixels = reference.to_caffe(content_tensor, mean).contiguous().requires_grad_(True)

    def loss() -> torch.Tensor:
        features = model(reference.to_rgb(pixels, mean), layers, winograd=True)
        content_term = 5 * (features[DEFAULT_CONTENT_LAYER] - content_target).pow(2).mean()
        generated = grams(features)
        style_term = sum(100 * (generated[layer] - style_targets[layer]).pow(2).mean() for layer in DEFAULT_STYLE_LAYERS)
        dx = pixels[..., :-1, :-1] - pixels[..., :-1, 1:]
        dy = pixels[..., :-1, :-1] - pixels[..., 1:, :-1]
        return content_term + style_term + 1e-3 * 0.5 * (dx.pow(2).sum() + dy.pow(2).sum())

    iterations = reference.lbfgs_steps(pixels, loss)
    for _ in range(steps):
        next(iterations)
    return images.to_pil(reference.to_rgb(pixels.detach(), mean).clamp(0, 1))


def ours(content: Image.Image, style: Image.Image, settings: Settings) -> Image.Image:
    return list(stylize(content, style, replace(settings, frame_interval=3600)))[-1].image


def judge(picture: Image.Image, content: Image.Image, style: Image.Image) -> dict[str, float]:
    return distances(picture, content, style, YARDSTICK)


def run_pair(pair: Pair, size: int, settings: Settings | None, out: Path, anchor_steps: int, reuse_anchor: bool, label: str) -> dict:
    content, style = images.open_image(picture_path(pair.content)), images.open_image(picture_path(pair.style))
    record: dict = {"pair": pair.name, "hard": pair.hard, "size": size}
    anchor_json, anchor_png = out / f"{pair.name}-anchor.json", out / f"{pair.name}-anchor.png"
    if reuse_anchor and anchor_json.is_file() and anchor_png.is_file() and json.loads(anchor_json.read_text())["steps"] == anchor_steps:
        record["anchor"] = json.loads(anchor_json.read_text())
    elif anchor_steps and not (reuse_anchor and settings is not None):
        started = time.perf_counter()
        picture = anchor(content, style, size, anchor_steps)
        seconds = time.perf_counter() - started
        picture.save(anchor_png)
        record["anchor"] = {"steps": anchor_steps, "seconds": seconds, **judge(picture, content, style)}
        anchor_json.write_text(json.dumps(record["anchor"], indent=2))
    if settings is None:
        return record
    started = time.perf_counter()
    picture = ours(content, style, replace(settings, size=size))
    seconds = time.perf_counter() - started
    picture.save(out / f"{pair.name}-{label}.png")
    record[label] = {"seconds": seconds, **judge(picture, content, style)}
    (out / f"{pair.name}-{label}.json").write_text(json.dumps(record, indent=2))
    return record


def contact_sheet(records: list[dict], out: Path, label: str, split: str = "panel", tile: int = 220) -> Path:
    """One row per pair: photo | painting | anchor | ours, each labelled with its figures."""
    font = ImageFont.load_default(size=15)
    columns = ["photo", "painting", "anchor", label]
    caption = 40
    sheet = Image.new("RGB", (len(columns) * (tile + 8) + 8, len(records) * (tile + caption + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for row, record in enumerate(records):
        content_name, style_name = record["pair"].split("-", 1)
        pictures = {"photo": picture_path(content_name), "painting": picture_path(style_name),
                    "anchor": out / f"{record['pair']}-anchor.png", label: out / f"{record['pair']}-{label}.png"}
        for column, name in enumerate(columns):
            top, left = 8 + row * (tile + caption + 8), 8 + column * (tile + 8)
            if pictures[name].is_file():
                with Image.open(pictures[name]) as picture:
                    picture.thumbnail((tile, tile))
                    sheet.paste(picture.convert("RGB"), (left + (tile - picture.width) // 2, top + (tile - picture.height) // 2))
            figures = record.get(name)
            text = (f"{name}: content {figures['content']:.3f}\nstyle {figures['style']:.4f} · {figures['seconds']:.0f} s"
                    if figures else f"{record['pair'] if name == 'photo' else ''}")
            draw.multiline_text((left, top + tile + 2), text, fill="black", font=font, spacing=2)
    path = out / f"contact-sheet-{split}-{label}.png"
    sheet.save(path)
    return path


def table(records: list[dict], label: str) -> str:
    header = ["pair", "anchor content", "anchor style", "anchor s", f"{label} content", f"{label} style", f"{label} s",
              "content vs anchor", "style vs anchor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        ours_figures, anchor_figures = record[label], record.get("anchor")
        cells = [record["pair"]]
        cells += ([f"{anchor_figures['content']:.3f}", f"{anchor_figures['style']:.4f}", f"{anchor_figures['seconds']:.0f}"]
                  if anchor_figures else ["-"] * 3)
        cells += [f"{ours_figures['content']:.3f}", f"{ours_figures['style']:.4f}", f"{ours_figures['seconds']:.1f}"]
        cells += ([f"{ours_figures['content'] / anchor_figures['content']:.2f}x", f"{ours_figures['style'] / anchor_figures['style']:.2f}x"]
                  if anchor_figures else ["-"] * 2)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rules(records: list[dict], label: str) -> str:
    """The two rules counted: the photo kept at least as well as the anchor keeps it (content <= its),
    and the painting taken as far, or within 10% (style <= 1.1x its)."""
    judged = [record for record in records if record.get("anchor") and record.get(label)]
    kept = [record[label]["content"] <= record["anchor"]["content"] for record in judged]
    taken = [record[label]["style"] <= 1.1 * record["anchor"]["style"] for record in judged]
    return (f"content <= the anchor's on {sum(kept)} of {len(judged)} pairs; style <= 1.1x the anchor's on {sum(taken)}; "
            f"both on {sum(map(all, zip(kept, taken)))}")


def _setting(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    declared = declaration(name)  # StopIteration for an unknown name
    if declared.kind is tuple:
        return name, tuple(declared.item(item) for item in value.split(","))
    if declared.kind is bool:
        return name, value.lower() in ("1", "true", "yes", "on")
    return name, declared.kind(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nst.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--split", choices=tuple(SPLITS), default="panel",
                        help="the panel, on which settings are chosen, or the validation pairs, on which they are checked")
    parser.add_argument("--pairs", nargs="+", metavar="NAME", help="pair names (content-style), default the whole split")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="a setting for our pictures, e.g. style_weight=3 or style_layer_weights=1,1,1,0.5,0.1")
    parser.add_argument("--label", default="ours", help="name of this configuration in file names and the sheet")
    parser.add_argument("--anchor-steps", type=int, default=300, help="0: no anchor")
    parser.add_argument("--reuse-anchor", action="store_true", help="take the anchor's pictures from an earlier run in --out; "
                        "pairs without one get none (with --anchor-only: made)")
    parser.add_argument("--anchor-only", action="store_true", help="make the anchor's pictures only")
    parser.add_argument("--out", default="quality-output")
    args = parser.parse_args(argv)
    try:
        settings = Settings(**dict(_setting(text) for text in args.set)).validated()
    except (SettingsError, StopIteration, ValueError) as error:
        parser.error(f"--set: {error or 'unknown setting'}")
    pairs = [pair for pair in SPLITS[args.split] if not args.pairs or pair.name in args.pairs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reuse_freed_memory()  # as the app does
    records = []
    for pair in pairs:
        records.append(run_pair(pair, args.size, None if args.anchor_only else settings, out, args.anchor_steps, args.reuse_anchor,
                                args.label))
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    if args.anchor_only:
        return 0
    summary = {"size": args.size, "split": args.split, "settings": asdict(settings), "yardstick": asdict(YARDSTICK),
               "pairs": records, "rules": rules(records, args.label)}
    (out / f"results-{args.split}-{args.label}.json").write_text(json.dumps(summary, indent=2))
    (out / f"table-{args.split}-{args.label}.md").write_text(table(records, args.label) + "\n\n" + summary["rules"] + "\n")
    print(table(records, args.label))
    print(summary["rules"])
    print(f"contact sheet: {contact_sheet(records, out, args.label, args.split)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
