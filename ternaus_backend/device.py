"""Choosing the torch device: one rule for the CLI, the HTTP API, extraction, training and
loading."""

from __future__ import annotations

import torch

from ternaus_backend.errors import InputError


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """``None``, ``""`` or ``"auto"``: CUDA when present, else the CPU; otherwise the named device.

    Raises InputError for an unknown name or a CUDA device on a machine without a usable GPU.
    """
    if isinstance(name, torch.device):
        device = name
    elif name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"Unknown device {name!r}: use auto, cpu or cuda.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"The device {str(device)!r} was asked for but this machine has no usable "
            "GPU; use cpu (or auto)."
        )
    return device
