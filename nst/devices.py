"""Which devices this machine has, and the one a `device` setting means here."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that is unknown or not on this machine; the message names what is."""


def available_devices() -> list[str]:
    """The devices this machine has, as `--device` takes them: cpu, then cuda:0 ..., then mps."""
    devices = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


def resolve_device(name: str) -> torch.device:
    """The torch device `name` means on this machine, or SettingsError: validation checks it here, and the runtime runs on it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from error
    here = available_devices()
    index = device.index or 0
    if not any(present.split(":")[0] == device.type and int(present.partition(":")[2] or 0) == index for present in here):
        raise DeviceError(f"device {name!r} is not available here; this machine has {', '.join(here)} (or use auto)")
    return device
