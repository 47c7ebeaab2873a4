"""Where models run: the ``device`` setting and job field, read, checked and resolved.

A device is written ``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda``
(the first GPU) or ``cuda:N``. Reading and checking the words needs no torch, so the server's
settings and the request checks stay cheap; finding out which GPUs exist imports torch, and
happens only where a setting or a job names CUDA, or where a model is about to run.

Each process holds the server's setting once (`use_setting`, called at start by the server and
by its worker processes): it is what a job or a predictor without a device of its own runs on.
"""

from __future__ import annotations

import re

AUTO = "auto"
CPU = "cpu"
DEVICE_RULE = "auto, cpu, cuda or cuda:N (N a GPU number from 0)"
"""The accepted spellings, for messages."""
_DEVICE = re.compile(r"auto|cpu|cuda(?::(0|[1-9][0-9]{0,2}))?")

_setting = CPU
"""The server's device setting in this process (see `use_setting`); the CPU until set."""


class DeviceUnavailable(Exception):
    """A device names a CUDA GPU this process does not see; the message says which and why."""


def parse(value: str) -> str:
    """The device ``value`` names, spelled the one way it is recorded (``cuda`` is ``cuda:0``).

    Raises:
        ValueError: it is not one of DEVICE_RULE.
    """
    text = value.strip().lower()
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise ValueError(f"{value!r} is not a device: use {DEVICE_RULE}")
    if text == "cuda":
        return "cuda:0"
    return text


def names_cuda(device: str) -> bool:
    """Whether ``device`` (as `parse` returns it) asks for a GPU outright, not through auto."""
    return device.startswith("cuda")


def cuda_device_count() -> int:
    """GPUs torch sees in this process (0 without CUDA); imports torch."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def unavailable_reason(device: str, cuda_devices: int, workers: int = 1) -> str | None:
    """Why ``device`` cannot run where ``cuda_devices`` GPUs are seen, or None when it can.

    A data-parallel job (``workers`` > 1) takes one GPU per worker.
    """
    if not names_cuda(device):
        return None
    number = int(device.split(":", 1)[1])
    if cuda_devices == 0:
        return f"device {device} is not available: no CUDA GPU is visible to torch"
    if number >= cuda_devices:
        return (
            f"device {device} is not available: torch sees {cuda_devices} CUDA GPU(s),"
            f" cuda:0 to cuda:{cuda_devices - 1}"
        )
    if workers > cuda_devices:
        return (
            f"{workers} data-parallel workers on {device} take a GPU each, and there are"
            f" {cuda_devices}"
        )
    return None


def use_setting(device: str) -> None:
    """Hold the server's ``device`` setting for this process: what "no device given" means.

    Called once at start, by the server process (its predictors) and by each training worker.
    """
    global _setting
    _setting = parse(device)


def setting() -> str:
    """The server's device setting held by this process (``cpu`` until `use_setting`)."""
    return _setting


def resolve(requested: str = "") -> str:
    """The concrete device to run on: ``cpu`` or ``cuda:N``; imports torch.

    ``requested`` empty means the server's setting; ``auto`` is the first GPU when torch sees
    one, else the CPU.

    Raises:
        DeviceUnavailable: it names a GPU torch does not see here.
        ValueError: it is not a device.
    """
    device = parse(requested) if requested else _setting
    if device == CPU:
        return CPU  # no torch import: a CPU-only server never asks CUDA anything
    count = cuda_device_count()
    if device == AUTO:
        return "cuda:0" if count else CPU
    reason = unavailable_reason(device, count)
    if reason is not None:
        raise DeviceUnavailable(reason)
    return device
