"""The objective's terms, each defined once, and the two ways of reading a picture they are evaluated on.

A term is a sum over the positions of some layer (or over pixels), so it is made of additive sums:
`sums(view)` gives a view's share of them, `value(sums, size_at)` the term from the sums over the whole
picture. A `Whole` view owns every position; a `Tile` view owns its core's (`nst.tiles`), and the
tiled evaluation (`nst.objective`) adds the tiles' sums, then back-propagates each tile's
`surrogate(view, pairing)`: a scalar whose gradient with respect to what the tile owns is the whole
term's, `pairing` being what `value_and_pairing(sums, size_at)` derived from the summed sums. Adding a term
is one class here and one line in `Objective.terms`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import losses, tiles

SizeAt = Callable[[str], tuple[int, int]]  # the whole picture's map size at a layer


class Whole:
    """The whole picture at once: it owns every position of every layer."""

    def __init__(self, picture: Tensor, features: dict[str, Tensor]):
        self.picture, self.features = picture, features

    def size_at(self, layer: str) -> tuple[int, int]:
        return tuple(self.features[layer].shape[-2:])

    def owned(self, layer: str) -> Tensor:
        return self.features[layer]

    def window(self, tensor: Tensor, layer: str) -> Tensor:
        """What a tensor on the whole picture's grid at `layer` holds at the positions owned."""
        return tensor

    def total_variation(self) -> Tensor:
        return losses.total_variation(self.picture)

    def pixels(self, tensor: Tensor) -> tuple[Tensor, Tensor]:
        """The picture's pixels owned, and a tensor on the picture's grid at the same pixels."""
        return self.picture, tensor


class Tile:
    """One tile of a plan: `piece` is what it reads of the picture, `features` the network's on it."""

    def __init__(self, plan: tiles.Plan, tile: tiles.Tile, piece: Tensor, features: dict[str, Tensor]):
        self.plan, self.tile, self.picture, self.features = plan, tile, piece, features
        self.size_at = plan.size_at

    def owned(self, layer: str) -> Tensor:
        return tiles.core_features(self.plan, self.tile, layer, self.features[layer])

    def window(self, tensor: Tensor, layer: str) -> Tensor:
        return tensor[(..., *self.plan.global_core(self.tile, layer, tensor.shape[-2:]))]

    def total_variation(self) -> Tensor:
        return tiles.total_variation_sum(self.plan, self.tile, self.picture) / (self.plan.height * self.plan.width)

    def pixels(self, tensor: Tensor) -> tuple[Tensor, Tensor]:
        top, bottom, left, right = self.tile.core
        read_top, _, read_left, _ = self.tile.read
        core = self.picture[..., top - read_top: bottom - read_top, left - read_left: right - read_left]
        return core, tensor[..., top:bottom, left:right]


class Content:
    """1/2 sum (F - P)^2 at the content layer, weighed by alpha."""

    name = "content"

    def __init__(self, layer: str, target: Tensor, alpha: float):
        self.layer, self.target, self.weight = layer, target, alpha

    def sums(self, view) -> dict:
        return {"content": losses.content_loss(view.owned(self.layer), view.window(self.target, self.layer))}

    def value(self, sums: dict, size_at: SizeAt) -> Tensor:
        return sums["content"]

    def value_and_pairing(self, sums: dict, size_at: SizeAt) -> tuple[Tensor, None]:
        return sums["content"], None

    def surrogate(self, view, pairing: None) -> Tensor:
        return self.weight * self.sums(view)["content"]


class Style:
    """The style term over regions: each a mask (None: the whole picture) and its Gram targets per
    position. The Gram matrix of a region weighs the features by the root of its mask, averaged down
    to each layer's grid (Gatys et al. 2017), and its term counts by the region's share of the picture."""

    name = "style"

    def __init__(self, layers: tuple[str, ...], regions: list[tuple[Tensor | None, dict[str, Tensor]]], betas: dict):
        self.layers, self.regions, self.betas, self.weight = layers, regions, betas, 1.0
        self._grids: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]] = {}

    def sums(self, view) -> dict:
        grams = {}
        for layer in self.layers:
            activations = view.owned(layer)
            for index in range(len(self.regions)):
                grams[index, layer] = losses.gram(losses.as_matrix(self._weighed(view, index, layer, activations)))
        return grams

    def value(self, grams: dict, size_at: SizeAt) -> Tensor:
        layer_terms, betas = [], []
        for layer in self.layers:
            size = size_at(layer)
            for index, (mask, targets) in enumerate(self.regions):
                gram, share = grams[index, layer], 1.0
                positions = size[0] * size[1]
                if mask is not None:
                    _, share, positions = self._grid(index, layer, size)
                layer_terms.append(share * losses.style_layer_loss(gram, targets[layer] * positions, gram.shape[0], positions))
                betas.append(self.betas[index, layer])
        return losses.style_loss(layer_terms, betas)

    def value_and_pairing(self, grams: dict, size_at: SizeAt) -> tuple[Tensor, dict]:
        """The term, and W + W^T per region and layer, W its gradient with respect to the summed Gram matrix."""
        fixed = {key: gram.detach().requires_grad_(True) for key, gram in grams.items()}
        with torch.enable_grad():
            value = self.value(fixed, size_at)
            weights = torch.autograd.grad(value, list(fixed.values()))
        return value.detach(), {key: weight + weight.T for key, weight in zip(fixed, weights, strict=True)}

    def surrogate(self, view, symmetric: dict) -> Tensor:
        total = None
        for layer in self.layers:
            core = view.owned(layer)
            for index, (mask, _) in enumerate(self.regions):
                root = None if mask is None else view.window(self._grid(index, layer, view.size_at(layer))[0], layer)
                part = _WeighedGram.apply(core, symmetric[index, layer], root)
                total = part if total is None else total + part
        return total

    def _weighed(self, view, index: int, layer: str, activations: Tensor) -> Tensor:
        if self.regions[index][0] is None:
            return activations
        return activations * view.window(self._grid(index, layer, view.size_at(layer))[0], layer)

    def _grid(self, index: int, layer: str, size) -> tuple[Tensor, Tensor, Tensor]:
        """A region's mask on a layer's grid: its square root (to weigh the features), its share of
        the picture and its sum (the region's positions), made on first use."""
        if (index, layer) not in self._grids:
            grid = F.interpolate(self.regions[index][0], size=tuple(size), mode="area")
            self._grids[index, layer] = grid.sqrt(), grid.mean(), grid.sum().clamp_min(1e-6)
        return self._grids[index, layer]


class TotalVariation:
    """Squared differences of neighbouring pixels, per pixel; nothing is computed at weight 0."""

    name = "tv"

    def __init__(self, weight: float):
        self.weight = weight

    def sums(self, view) -> dict:
        return {"tv": view.total_variation() if self.weight else view.picture.new_zeros(())}

    def value(self, sums: dict, size_at: SizeAt) -> Tensor:
        return sums["tv"]

    def value_and_pairing(self, sums: dict, size_at: SizeAt) -> tuple[Tensor, None]:
        return sums["tv"], None

    def surrogate(self, view, pairing: None) -> Tensor | None:
        return self.weight * view.total_variation() if self.weight else None


class Temporal:
    """A video frame's pull toward the previous painted frame warped along the optical flow (Ruder et
    al. 2016): sum over pixels of c (x - warped)^2 / sum c, c the flow's reliability (0 where it is not
    to be trusted); pixel by pixel, so a tile's share is its core's pixels."""

    name = "temporal"

    def __init__(self, warped: Tensor, reliability: Tensor, weight: float):
        """`warped` (1, 3, H, W) and `reliability` (1, 1, H, W) at the picture's size."""
        self.warped, self.reliability, self.weight = warped, reliability, weight
        self.reliable = reliability.sum().clamp_min(1.0)

    def sums(self, view) -> dict:
        picture, warped = view.pixels(self.warped)
        _, reliability = view.pixels(self.reliability)
        difference = picture.to(warped.dtype) - warped
        return {"temporal": (reliability * difference.pow(2)).sum() / self.reliable}

    def value(self, sums: dict, size_at: SizeAt) -> Tensor:
        return sums["temporal"]

    def value_and_pairing(self, sums: dict, size_at: SizeAt) -> tuple[Tensor, None]:
        return sums["temporal"], None

    def surrogate(self, view, pairing: None) -> Tensor:
        return self.weight * self.sums(view)["temporal"]


class _WeighedGram(torch.autograd.Function):
    """<W, G> for a tile's core F (weighed by a mask's root) and its Gram matrix G = F F^T, whose value
    pass 2 does not need: the forward returns 0 and makes no G; the backward gives (W + W^T) F, made
    when autograd reaches the layer, so that one layer's gradient is held at a time."""

    @staticmethod
    def forward(ctx, core: Tensor, symmetric: Tensor, root: Tensor | None) -> Tensor:
        ctx.save_for_backward(core)
        ctx.symmetric, ctx.root = symmetric, root
        return symmetric.new_zeros(())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (core,) = ctx.saved_tensors
        positions = losses.as_matrix(core).T  # (M, N), positions in the order as_matrix reads them
        root = None if ctx.root is None else ctx.root.reshape(-1, 1)
        gradient = (positions if root is None else positions * root) @ (ctx.symmetric * grad)
        if root is not None:
            gradient.mul_(root)
        return gradient.reshape(1, core.shape[-2], core.shape[-1], -1).permute(0, 3, 1, 2).to(core.dtype), None, None
