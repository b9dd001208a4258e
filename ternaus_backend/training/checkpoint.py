"""The files a training run writes and reads back: the model, the resumable checkpoint.

The best epoch (highest ``val_f1``, ties by lower ``val_loss``) is saved to ``config.out`` with
full metadata. ``config.out`` is only ever replaced by a validated model: a run cancelled before
its first validation saves its unvalidated weights to ``config.out`` only when that file does not
exist yet, else beside it (:func:`unvalidated_path`), so an earlier model (``--init X --out X``
included) stays intact. A resumable checkpoint (model, optimizer, scheduler, scaler, epoch, best
score, RNG state) is written to ``<out>.ckpt.pt`` (:func:`checkpoint_path`) after every epoch.
Files are replaced atomically, so an interrupted run never leaves a broken model.

A resumed run (``--resume``) must continue the checkpoint's run: the same bands
(:func:`check_resume_bands`), resolution (:func:`check_resume_resolution`) and training data, with
epochs left and its best model still in place (:func:`check_resume_request`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ternaus_backend.errors import InputError
from ternaus_backend.models.metadata import ModelMetadata

if TYPE_CHECKING:
    from ternaus_backend.training.config import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_path",
    "unvalidated_path",
    "save_model_file",
    "write_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "check_resume_bands",
    "check_resume_resolution",
    "check_resume_request",
]

CHECKPOINT_FORMAT = "ternaus-train-checkpoint/1"


def checkpoint_path(out: Path) -> Path:
    """The resumable checkpoint beside a model file: ``<out>.ckpt.pt``."""
    return out.with_name(out.name + ".ckpt.pt")


def unvalidated_path(out: Path) -> Path:
    """Where a cancelled run's unvalidated weights go when ``out`` already holds a model."""
    return out.with_name(out.stem + ".unvalidated.safetensors")


# -- writing ---------------------------------------------------------------------------------


def _atomic_replace(write: Callable[[Path], Any], path: Path) -> None:
    """Write through ``write(tmp_path)`` beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model_file(model: nn.Module, meta: ModelMetadata, path: Path) -> None:
    """Save ``model`` with ``meta`` to ``path`` (atomically), creating its folder."""
    from ternaus_backend.models.model_file import save_model  # writes atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, meta, path)


def rng_state() -> dict[str, Any]:
    """The random generators' state (CPU, and every CUDA device when there is one)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the random generators from :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(state: dict[str, Any], path: Path, out: Path) -> None:
    """Write the checkpoint ``state`` to ``path`` atomically; on a full disk raise
    ``DiskFullError`` saying where to free space and where the best model (``out``) is."""
    try:
        _atomic_replace(lambda tmp: torch.save(state, tmp), path)
    except (OSError, RuntimeError) as error:
        from ternaus_backend.errors import DiskFullError
        from ternaus_backend.outputs import looks_like_full_disk

        weights = sum(t.numel() * t.element_size() for t in state["model"].values())
        if not looks_like_full_disk(error, path.parent, 3 * weights):
            raise
        best = f"the best model so far is {out}" if out.exists() else "no model has been saved yet"
        raise DiskFullError(
            f"Cannot save the training checkpoint {path}: the disk is full: free "
            f"space in {path.parent}; {best}.",
            details=f"{type(error).__name__}: {error}",
        ) from error


# -- resuming --------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``; refused (``InputError``) when missing, unreadable or not ours."""
    if not path.exists():
        raise InputError(
            f"There is no checkpoint {path} to resume from; run without --resume to start afresh."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"The checkpoint {path} cannot be read; delete it and train without --resume.",
            details=f"{type(exc).__name__}: {exc}",
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a Ternaus training checkpoint; train without --resume.")
    return ckpt


def check_resume_bands(meta: ModelMetadata, band_names: Sequence[str], ckpt_path: Path) -> None:
    """A resumed run reads the bands the checkpoint was trained on; other inputs are refused."""
    if list(meta.band_names) != list(band_names):
        raise InputError(
            f"The checkpoint {ckpt_path.name} was trained on bands {meta.band_names}, the "
            f"inputs have {band_names}; resume with the same rasters or train afresh."
        )


def check_resume_resolution(config: TrainConfig, meta: ModelMetadata, ckpt_path: Path) -> None:
    """A resumed run keeps its resolution; asking for another one is refused."""
    wanted = config.resolution_m
    if wanted is not None and abs(wanted - meta.resolution_m) > 1e-6 * max(wanted, 1.0):
        raise InputError(
            f"The checkpoint {ckpt_path.name} was trained at {meta.resolution_m} m, not "
            f"--resolution-m {wanted}; resume without --resolution-m (or with the same value), "
            "or train afresh."
        )


def _source_paths(sources: Sequence[Any]) -> list[tuple[str | None, ...]]:
    """Each source's files (RGB, MS, labels, areas) as absolute paths, for comparison."""

    def norm(path: Any) -> str | None:
        return None if path is None else str(Path(path).expanduser().resolve())

    def get(source: Any, name: str) -> Any:
        return source.get(name) if isinstance(source, dict) else getattr(source, name)

    names = ("rgb", "ms", "labels", "aoi", "val_aoi")
    return [tuple(norm(get(s, name)) for name in names) for s in sources]


def check_resume_request(
    config: TrainConfig, ckpt: dict[str, Any], ckpt_path: Path, out: Path
) -> None:
    """A resumed run must continue the checkpoint's run: same data, epochs left, its model."""
    done = int(ckpt["epoch"])
    if done >= config.epochs:
        raise InputError(
            f"The checkpoint {ckpt_path.name} has already finished {done} epoch(s) and "
            f"--epochs is {config.epochs}: nothing is left to train. Give more --epochs to "
            "continue, or train afresh without --resume."
        )
    saved = ckpt.get("config")
    if saved:
        before = _source_paths(json.loads(saved).get("sources", []))
        if before != _source_paths(config.sources):
            raise InputError(
                f"The checkpoint {ckpt_path.name} was trained on other training data (rasters, "
                "labels or areas); resume with the same --rgb/--ms/--labels/--aoi/--val-aoi, or "
                "train afresh without --resume.",
                details=f"checkpoint: {before}",
            )
    if ckpt.get("best") is not None and not out.exists():
        raise InputError(
            f"The best model {out} of the checkpointed run is missing, so resuming might end "
            "without a model; put it back, or train afresh without --resume (and delete "
            f"{ckpt_path.name})."
        )
