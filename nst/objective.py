"""What is optimised: the weighted loss terms at one scale, with their targets computed once.

The content term grows with the number of positions and the style terms do not, and the weight
sources differ in scale, so each term is measured against its own target, and the style as a whole
against the photo (docs/method.md explains the choice and its measurements):

    alpha   = content_weight / (1/2 sum P^2)
    beta_l  = style_weight * w_l * rho / E(A_l),   E(X) = 1/(4 N^2 M^2) sum X^2
    rho     = (E(A_c) / E(C_c))^(1/4)

where A_c and C_c are the painting's and the photo's Gram matrices at the content layer. The
weighted content term is content_weight times the relative squared error of the content
activations; each style layer adds style_weight * w_l * rho times the relative squared error of its
Gram matrix. The same slider values give the same look at 128 px and 2048 px, whichever weights are
loaded, and equal layer weights w_l give each layer an equal say.

rho is how strong the painting's texture is against the photo's, where the content is judged:
relative errors alone press a pale painting onto a busy photo hard and take little of a bold one.
`distances()` leaves rho out: the panel's yardstick.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from . import distributed, images, losses, tiles
from .memory import held_bytes, lbfgs_history, release_freed_memory
from .devices import resolve_device
from .runtime import Runtime
from .settings import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, Settings
from .terms import Content, Style, Tile, TotalVariation, Whole
from .vgg import load_model

# How much more a print's look at LOOK_SIDE counts than its own terms, and how much more the photo
# counts in it than in a run of LOOK_SIDE: at full size the print's own terms draw it toward the
# painting, 2 % farther from the photo read small without this (docs/method.md).
LOOK_WEIGHT = 4.0
LOOK_CONTENT_FACTOR = 1.1


class Objective:
    """The weighted loss terms of a picture at one scale: `objective(image)` -> {content, style, tv, total};
    `loss_and_gradient(image)` also leaves their gradient in image.grad, by exact tiles where
    `settings.tile` says (`nst.tiles`).

    With a `mask` (1, 1, H, W) in [0, 1] at the picture's size, the style is matched region by region
    (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer"): at each style
    layer the mask is averaged down to the layer's grid, and the Gram matrix of the mask's region,
    sum over positions of m F F^T divided by sum of m, is matched to the first style's; that of the
    rest (1 - m) to the second style's, or to nothing when there is one style. Each region's term
    counts by its share of the picture, so a painted stroke is pressed toward the style as hard as a
    whole picture would be. With one style the picture still drifts where the mask is black (the
    content term does not hold a region's colours); the engine shows the photo there.
    """

    def __init__(self, model, content: Tensor, styles: list[Tensor], settings: Settings, runtime: Runtime, mask: Tensor | None = None,
                 against_the_photo: bool = True, style_reading_side: Callable[[int], int] | None = None, look: Look | None = None):
        """`style_reading_side(own_side)`: the long side a style whose tensor is `own_side` px long (over
        `style_scale`) is read at, times `settings.style_scale` (default: the picture's long side).
        `look`: a picture larger than LOOK_SIDE also judged read at that side (`Look`)."""
        self.model, self.settings, self.runtime, self.look = model, settings, runtime, look
        self.layers = set(settings.style_layers) | {settings.content_layer}
        held = _held(settings, content.shape[-2:])
        own_plan = self._plan(content.shape[-2:], self.layers, held)
        self.tiles = self._shared(own_plan, content.shape[-2:])
        reading = style_reading_side or (lambda own_side: max(content.shape[-2:]))
        with torch.inference_mode(), runtime.autocast():
            target = self._whole_features(content, [settings.content_layer], own_plan)[settings.content_layer]
            self.content_target = target.to(torch.promote_types(target.dtype, torch.float32))
            del target
            photo_texture = _energy(_gram_per_position(losses.as_matrix(self.content_target)))
            targets = []  # per style: its Gram matrices per position, A / M
            for style in styles:
                style_side = round(reading(round(max(style.shape[-2:]) / settings.style_scale)) * settings.style_scale)
                scaled = images.resize(style, images.style_size(style.shape[-1], style.shape[-2], style_side))
                targets.append(self._style_grams(scaled, {*settings.style_layers, settings.content_layer}, held))
        self.alpha = settings.content_weight / max(0.5 * float(torch.linalg.vector_norm(self.content_target)) ** 2, 1e-12)
        if mask is None:  # one region, the whole picture, matched to the blend of the styles
            blended = {layer: sum(blend * target[layer] for blend, target in zip(settings.style_blend, targets, strict=True))
                       for layer in targets[0]}
            self.regions = [(None, blended)]
        else:
            self.regions = [(mask, targets[0])] + ([(1 - mask, targets[1])] if len(targets) > 1 else [])
        self.betas = {}  # per region and layer: style_weight * w_l * rho / the target's own energy
        for index, (_, grams) in enumerate(self.regions):
            rho = (_energy(grams[settings.content_layer]) / max(photo_texture, 1e-12)) ** 0.25 if against_the_photo else 1.0
            for layer, weight in zip(settings.style_layers, settings.style_layer_weights, strict=True):
                self.betas[index, layer] = settings.style_weight * weight * rho / max(_energy(grams[layer]), 1e-12)
        if distributed.active():
            self._agree_with_the_first_process()
        # The weighted terms, in the order the total adds them.
        self.terms = [Content(settings.content_layer, self.content_target, self.alpha),
                       Style(settings.style_layers, self.regions, self.betas),
                       TotalVariation(settings.tv_weight)]

    def _plan(self, size, layers, held: float) -> tiles.Plan | None:
        return _plan(self.settings.tile, size, layers, self.runtime.device, held)

    def _shared(self, plan: tiles.Plan | None, size) -> tiles.Plan | None:
        """With several processes (`nst.distributed`), tiles for each to have one where `plan` would
        leave some without: where the picture would be one tile, or where `tile` is auto."""
        processes = distributed.world_size()
        if processes > 1 and (plan is None or self.settings.tile == "auto" and len(plan) < processes):
            return tiles.shared_plan(*size, self.layers, processes)
        return plan

    def _agree_with_the_first_process(self) -> None:
        """Every process computes the targets; the first one's style targets and weights are taken by
        all, so that each computes the style term bit for bit alike (cuDNN's autotuning may choose
        other convolutions on another GPU)."""
        weights = torch.tensor([self.alpha, *self.betas.values()], dtype=torch.float64, device=self.runtime.device)
        with torch.inference_mode():
            distributed.broadcast([weights, *(grams[layer] for _, grams in self.regions for layer in self.settings.style_layers)])
        self.alpha, *betas = weights.tolist()
        self.betas = dict(zip(self.betas, betas, strict=True))

    def _features(self, image: Tensor, layers) -> dict[str, Tensor]:
        return self.model(image, layers, self.runtime.winograd)

    def _whole_features(self, image: Tensor, layers, plan: tiles.Plan | None) -> dict[str, Tensor]:
        if plan is None:
            return {layer: feature.clone() for layer, feature in self._features(image, layers).items()}
        return tiles.features_of(image, layers, plan, self._features)

    def _style_grams(self, style: Tensor, layers, held: float) -> dict[str, Tensor]:
        """A style image's Gram matrices per position, A / M, at `layers`; by tiles where it is large."""
        plan = self._plan(style.shape[-2:], layers, held)
        if plan is None:
            features = self._features(style, layers)
            return {layer: _gram_per_position(losses.as_matrix(features[layer])) for layer in features}
        sums, positions = {}, {}
        for tile in plan:
            features = self._features(tile.region(style), layers)
            for layer in layers:
                matrix = losses.as_matrix(tiles.core_features(plan, tile, layer, features[layer]))
                sums[layer] = sums.get(layer, 0) + losses.gram(matrix)
                positions[layer] = positions.get(layer, 0) + matrix.shape[1]
        return {layer: sums[layer] / positions[layer] for layer in layers}

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        """The loss terms of the whole picture at once (whatever `tile` says), differentiable."""
        with self.runtime.autocast():
            view = Whole(image, self._features(image, self.layers))
        terms = self._weighed({term: term.value(term.sums(view), view.size_at) for term in self.terms})
        return terms if self.look is None else self._with(terms, self.look(image))

    @staticmethod
    def _with(terms: dict[str, Tensor], look: Tensor) -> dict[str, Tensor]:
        return terms | {"look": look, "total": terms["total"] + look}

    def _weighed(self, values: dict) -> dict[str, Tensor]:
        """{content, style, tv, ...}: each term's value times its weight, by the term's name, and their sum."""
        weighed = {term: term.weight * value for term, value in values.items()}
        total = None
        for value in weighed.values():
            total = value if total is None else total + value
        return {term.name: weighed[term] for term in self.terms} | {"total": total}

    def loss_and_gradient(self, image: Tensor) -> dict[str, Tensor]:
        """The loss terms, with their gradient added into `image.grad`: of the whole picture at once,
        or tile by tile (`nst.tiles`), exactly the same to float rounding."""
        if self.tiles is None:
            terms = self(image)
            terms["total"].backward()
            return terms
        return self._tiled(image)

    def _tiled(self, image: Tensor) -> dict[str, Tensor]:
        """Pass 1 sums every term over the tiles' cores (then over the processes); pass 2 back-propagates
        each tile's surrogates, whose gradient with respect to what the tile owns is the whole loss's,
        and adds its whole input gradient (core and margin) into the picture's (`nst.terms`)."""
        plan, picture = self.tiles, image.detach()
        mine = list(distributed.share(plan))  # all of them in one process; with several, its share (nst.distributed)
        sums, kept = self._pass_one(plan, mine, picture)
        distributed.all_reduce([total for term in self.terms for total in sums[term].values()])
        release_freed_memory()  # pass 1's blocks, which pass 2's larger ones would not fit between (docs/method.md)
        values, pairings = {}, {}
        for term in self.terms:
            values[term], pairings[term] = term.value_and_pairing(sums[term], plan.size_at)
        several = distributed.active()
        gradient = torch.zeros_like(image) if image.grad is None or several else image.grad
        for tile in mine[-1:] + mine[:-1]:
            if kept is not None:  # pass 1's last tile; no reference kept past it, so its graph goes when it is done
                view, kept = kept, None
            else:
                piece = tile.region(picture).clone().requires_grad_(True)
                with torch.enable_grad():
                    view = Tile(plan, tile, piece, self._tile_features(piece))
            surrogates = [part for term in self.terms if (part := term.surrogate(view, pairings[term])) is not None]
            functools.reduce(operator.add, surrogates).backward()
            tile.region(gradient).add_(view.picture.grad)
            del view
        distributed.all_reduce([gradient])
        if image.grad is None:
            image.grad = gradient
        elif gradient is not image.grad:
            image.grad.add_(gradient)
        terms = self._weighed(values)
        return terms if self.look is None else self._with(terms, self._look_gradient(image))

    def _look_gradient(self, image: Tensor) -> Tensor:
        """The look term of the whole picture, its gradient added into `image.grad`; the same in every
        process, so added after the tiles' gradient is summed over them."""
        picture = image.detach().requires_grad_(True)
        with torch.enable_grad():
            look = self.look(picture)
            look.backward()
        image.grad.add_(picture.grad)
        return look.detach()

    def _pass_one(self, plan: tiles.Plan, mine: list[tiles.Tile], picture: Tensor) -> tuple[dict, Tile | None]:
        """Every term's sums over these tiles' cores. The last tile keeps its forward's graph, so that
        pass 2 starts with it without running it again."""
        dtype = torch.promote_types(picture.dtype, torch.float32)
        sums, kept = {}, None
        for tile in mine:
            keep = tile is mine[-1]
            piece = tile.region(picture).clone().requires_grad_(True) if keep else tile.region(picture)
            with torch.set_grad_enabled(keep):
                view = Tile(plan, tile, piece, self._tile_features(piece))
            with torch.no_grad():
                for term in self.terms:
                    for key, part in term.sums(view).items():
                        total = sums.setdefault(term, {}).setdefault(key, picture.new_zeros(part.shape, dtype=dtype))
                        total.add_(part)
            if keep:
                kept = view
            del view
        return sums, kept

    def _tile_features(self, piece: Tensor) -> dict[str, Tensor]:
        with self.runtime.autocast():
            return self._features(piece, self.layers)


class Look:
    """A picture larger than LOOK_SIDE read at that side and judged by the objective of a picture of that
    side, times LOOK_WEIGHT: it holds a print to the look the picture of LOOK_SIDE has, while the print's
    own terms add the painting's strokes at 100 % (docs/method.md). Read by Lanczos, the sharpest common
    way to show a picture smaller: read by a blurrier filter, the print learnt strokes that only that
    filter averages into the small picture's texture."""

    def __init__(self, objective: Objective, size: tuple[int, int]):
        self.objective, self.size = objective, size

    def __call__(self, picture: Tensor) -> Tensor:
        terms = self.objective(images.lanczos_shrink(picture, self.size))
        return LOOK_WEIGHT * (terms["total"] + (LOOK_CONTENT_FACTOR - 1) * terms["content"])


def tile_plan(settings: Settings, size: tuple[int, int], device: torch.device) -> tiles.Plan | None:
    """The tiles an Objective made now would compute a picture of `size` in (in one process)."""
    return _plan(settings.tile, size, set(settings.style_layers) | {settings.content_layer}, device, _held(settings, size))


def _held(settings: Settings, size) -> float:
    """What a run holds for the whole picture besides a pass, which the tile's budget leaves room for."""
    return held_bytes(*size, lbfgs_history(3 * size[0] * size[1]), settings.content_layer)


def _plan(setting: str, size, layers, device: torch.device, held: float) -> tiles.Plan | None:
    """The tiles of a picture of `size` (None: the whole picture at once), by the `tile` setting."""
    side = tiles.choose_tile(setting, *size, layers, device, held)
    return None if side is None else tiles.plan(*size, layers, side)


def _energy(gram: Tensor) -> float:
    """E(X) of a Gram matrix per position: its style layer loss against zero."""
    return float(losses.style_layer_loss(torch.zeros_like(gram), gram, gram.shape[0], 1))


def _gram_per_position(matrix: Tensor) -> Tensor:
    return losses.gram(matrix) / matrix.shape[1]


# The measure every configuration is judged by, whatever weights it optimises with (docs/quality.md).
YARDSTICK = Settings(style_layers=DEFAULT_STYLE_LAYERS, style_layer_weights=(1.0,) * len(DEFAULT_STYLE_LAYERS),
                     content_layer=DEFAULT_CONTENT_LAYER, style_scale=1.0)


def distances(image: images.ImageSource, content: images.ImageSource,
              styles: images.ImageSource | Sequence[images.ImageSource], settings: Settings = YARDSTICK) -> dict[str, float]:
    """How far `image` is from the content and the style(s), at `image`'s size, by the same network.
    Images are taken as `stylize` takes them: the content resized to `image`'s size, each style to
    `image`'s long side times `style_scale`, its aspect kept.

    content: relative squared error of the content-layer activations, sum (F - P)^2 / sum P^2;
    style: the layer-weighted relative squared error of the Gram matrices per position,
    sum_l w_l sum (G_l - A_l)^2 / sum A_l^2 (A_l of the styles' blend, with several), the weights
    w_l normalised to sum 1 (the objective's terms with weights 1). In float32 with direct
    convolutions whatever the settings say about speed. `settings` gives the layers, their weights
    and the network; by default the yardstick: content at relu4_2, style at relu1_1 ... relu5_1
    with equal weights.
    """
    image, content, styles = images.open_image(image, "picture"), images.open_image(content, "content image"), images.open_styles(styles)
    settings = replace(settings, content_weight=1.0, style_weight=1.0, tv_weight=0.0).validated(len(styles))
    device = resolve_device(settings.device)
    model = load_model(settings.weights, settings.pooling, str(device))
    generated = images.to_tensor(image, device)
    content_tensor = images.resize(images.to_tensor(content, device), tuple(generated.shape[-2:]))
    measure = Runtime(device, "fp32", winograd=False, cuda_graphs=False)
    objective = Objective(model, content_tensor, [images.to_tensor(style, device) for style in styles], settings, measure,
                          against_the_photo=False)
    with torch.inference_mode():
        terms = objective(generated)
    return {"content": float(terms["content"]), "style": float(terms["style"])}
