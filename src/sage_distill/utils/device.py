"""Check a device name up front, so a long command refuses at once instead of failing an hour in."""

from __future__ import annotations

import re

from ..errors import ConfigError

_DEVICE_RE = re.compile(r"(cpu|cuda|mps)(:\d{1,3})?")


def check_device(device: str, option: str = "--device") -> str:
    """The device name when it is present on this machine; otherwise a ConfigError with the reason."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps", file=option)
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{device!r} asked for, but CUDA is not available on this machine; use cpu",
                              file=option)
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)",
                              file=option)
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{device!r} asked for, but MPS is not available on this machine; use cpu", file=option)
    return device
