"""The book-keeping of one training run: best score, history, the model and checkpoint it saves.

:class:`Run` keeps the best epoch (highest ``val_f1``, ties by lower ``val_loss``) in
``config.out`` and the resumable checkpoint beside it (:mod:`.checkpoint`), tunes the best
model's thresholds after training, and makes the :class:`~.config.TrainResult`, also when the run
is cancelled (:func:`cancelled_error`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ternaus_backend.errors import CancelledError
from ternaus_backend.models.metadata import ModelMetadata
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent
from ternaus_backend.training.blend import StateDict, blend_states
from ternaus_backend.training.checkpoint import (
    CHECKPOINT_FORMAT,
    rng_state,
    save_model_file,
    set_rng_state,
    unvalidated_path,
    write_checkpoint,
)
from ternaus_backend.training.config import EpochStats, TrainConfig, TrainResult
from ternaus_backend.training.dataset import PreparedSource
from ternaus_backend.training.provenance import model_provenance

log = logging.getLogger(__name__)

__all__ = ["Run", "cancelled_error"]


def _fmt(value: float | None) -> str:
    """A score for the log: four decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.4f}"


def _is_better(f1: float | None, loss: float, best: dict[str, Any] | None) -> bool:
    """Whether an epoch beats ``best``: a higher F1, or on a tie (or without F1) a lower loss."""
    if best is None:
        return True
    if f1 is not None and best.get("val_f1") is not None:
        if f1 > best["val_f1"] + 1e-9:
            return True
        if f1 < best["val_f1"] - 1e-9:
            return False
    return loss < best["val_loss"]


class Run:
    """Book-keeping of one run: best score, history, saving the model and the checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        meta: ModelMetadata,
        sources: Sequence[PreparedSource],
        notes: list[str],
        init_provenance: dict | None,
        out: Path,
        ckpt_path: Path,
        progress: ProgressCallback,
        started: float,
    ) -> None:
        self.config, self.model, self.meta, self.sources = config, model, meta, sources
        self.notes, self.init_provenance = notes, init_provenance
        self.out, self.ckpt_path, self.progress, self.started = out, ckpt_path, progress, started
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.epochs_done = 0
        self.unvalidated_saved: Path | None = None  # where cancelled() put unvalidated weights
        self.plan = ""  # the recipe's plan in words (epochs x steps, for how many buildings)
        self.blended = False  # the kept model is blended with the starting one (once)

    def _metadata(self, extra_notes: Sequence[str] = ()) -> ModelMetadata:
        """The model's metadata with this run's provenance (also read by :mod:`.calibration`)."""
        meta = self.meta.model_copy(deep=True)
        meta.provenance = model_provenance(
            self.config,
            self.sources,
            [*self.notes, *extra_notes],
            self.best,
            self.epochs_done,
            self.init_provenance,
        )
        return meta

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue the checkpointed run: its random state, best score, history and epochs."""
        set_rng_state(ckpt["rng"])
        self.best, self.history = ckpt.get("best"), list(ckpt["history"])
        self.epochs_done = int(ckpt["epoch"])

    def end_epoch(self, stats: EpochStats) -> None:
        """Record an epoch; save the model when it is the best so far (or unvalidated)."""
        self.epochs_done = stats.epoch
        unvalidated = stats.val_loss is None  # no labels: the latest epoch is the model
        stats.best = unvalidated or _is_better(stats.val_f1, stats.val_loss, self.best)
        if stats.best:
            self.best = {
                "epoch": stats.epoch,
                "val_f1": stats.val_f1,
                "val_loss": stats.val_loss,
                "val_iou": stats.val_iou,
            }
            save_model_file(self.model, self._metadata(), self.out)
        self.history.append(stats.as_dict())
        log.info(
            "epoch %d: loss %.4f, val loss %s, val IoU %s, val F1 %s%s",
            stats.epoch,
            stats.train_loss,
            _fmt(stats.val_loss),
            _fmt(stats.val_iou),
            _fmt(stats.val_f1),
            " (best, saved)" if stats.best else "",
        )

    def blend_with_start(
        self, start: StateDict, device: torch.device, progress: ProgressCallback
    ) -> None:
        """Blend the best model's weights with the starting model's (``config.blend`` of the
        fine-tuned ones, :mod:`.blend`) and rewrite it."""
        from ternaus_backend.models.model_file import load_model

        share = float(self.config.blend or 1.0)
        progress(ProgressEvent("blend", 0, 1, {"phase": "blend"}))
        best = load_model(self.out, device=str(device))
        best.load_state_dict(blend_states(start, best.state_dict(), share))
        note = (
            f"weights blended: {share:.0%} fine-tuned, {1 - share:.0%} the starting model's "
            "(keeps what it knew beyond the labelled areas)"
        )
        self.notes.append(note)
        log.info(note)
        save_model_file(best, self._metadata(), self.out)
        self.blended = True
        progress(ProgressEvent("blend", 1, 1, {"phase": "blend", "note": note}))

    def tune_thresholds(
        self, device: torch.device, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        """Tune the best model's thresholds on the labelled areas; rewrite it when they gain."""
        from ternaus_backend.models.model_file import load_model
        from ternaus_backend.training.thresholds import tune_on_labels

        progress(ProgressEvent("thresholds", 0, 1, {"phase": "thresholds"}))
        best = load_model(self.out, device=str(device))
        tuned = tune_on_labels(best, self.sources, device, cancel)
        if tuned is None:
            self.notes.append("thresholds kept: tuning on the labelled areas gained nothing")
            return
        thresholds, note = tuned
        self.notes.append(note)
        log.info(note)
        self.meta = self.meta.model_copy(update={"thresholds": thresholds})
        meta = self._metadata()
        best.metadata = meta
        save_model_file(best, meta, self.out)
        progress(ProgressEvent("thresholds", 1, 1, {"phase": "thresholds", "note": note}))

    def save_checkpoint(self, optimizer: Any, scheduler: Any, scaler: Any) -> None:
        """Write the resumable checkpoint (:func:`~.checkpoint.write_checkpoint`)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "metadata": self.meta.model_dump_json(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "epoch": self.epochs_done,
            "best": self.best,
            "history": self.history,
            "rng": rng_state(),
            "notes": [n for n in self.notes if not n.startswith("resumed after")],
            "init_provenance": self.init_provenance,
            "config": self.config.model_dump_json(),
        }
        write_checkpoint(state, self.ckpt_path, self.out)

    def cancelled(self, crops_per_s: float) -> TrainResult:
        """Before any validated epoch, save the current weights, never over an existing OUT."""
        if self.best is None:
            if self.out.exists():
                path = unvalidated_path(self.out)
                note = (
                    f"cancelled before the first epoch finished: the current, unvalidated "
                    f"weights were saved to {path}; {self.out} was left unchanged"
                )
            else:
                path = self.out
                note = (
                    "cancelled before the first epoch finished: the current, unvalidated "
                    "weights were saved as the best model so far"
                )
            self.notes.append(note)
            log.warning(note)
            save_model_file(self.model, self._metadata(), path)
            self.unvalidated_saved = path
        return self.result("cancelled", crops_per_s)

    def result(self, status: Literal["completed", "cancelled"], crops_per_s: float) -> TrainResult:
        """The run's :class:`TrainResult` so far."""
        best = self.best or {}
        if self.unvalidated_saved is not None:
            model_path: Path | None = self.unvalidated_saved
        else:
            model_path = self.out if self.out.exists() else None
        return TrainResult(
            status=status,
            model_path=model_path,
            checkpoint_path=self.ckpt_path,
            epochs_completed=self.epochs_done,
            best_epoch=best.get("epoch"),
            best_val_f1=best.get("val_f1"),
            best_val_loss=best.get("val_loss"),
            history=list(self.history),
            notes=list(self.notes),
            seconds=time.perf_counter() - self.started,
            crops_per_s=crops_per_s,
        )


def cancelled_error(run: Run, out: Path, crops_per_s: float) -> CancelledError:
    """The error a cancelled run raises, carrying its :class:`TrainResult` (``.result``)."""
    result = run.cancelled(crops_per_s)
    if run.unvalidated_saved is not None:
        kept = f"; {out} was left unchanged" if run.unvalidated_saved != out else ""
        message = (
            "Training was cancelled before the first epoch finished; the current, unvalidated "
            f"weights were saved to {run.unvalidated_saved}{kept}. No epoch finished, so "
            "there is no checkpoint to resume from: train again to continue."
        )
    else:
        where = f"kept in {result.model_path}" if result.model_path else "not saved"
        message = (
            f"Training was cancelled after {result.epochs_completed} epoch(s); the best model "
            f"so far is {where}. Resume with --resume."
        )
    error = CancelledError(message, details="; ".join(result.notes))
    error.result = result  # type: ignore[attr-defined]
    return error
