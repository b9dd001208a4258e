"""The provenance a trained model carries in its metadata: what trained it, on what, how well.

A fine-tuned model's ancestry is ``lineage``: a JSON list of at most :data:`LINEAGE_MAX`
ancestors, nearest first, each a few short fields (name, date, trained_by, init_model,
datasets), made of the init model's own ``lineage`` (or, in older files, its nested
``init_provenance``) plus the init model itself, so the header stays the same size however many
generations of fine-tuning there are.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ternaus_backend.training.dataset import PreparedSource, describe_sources

if TYPE_CHECKING:
    from ternaus_backend.training.config import TrainConfig

__all__ = ["LINEAGE_MAX", "model_provenance"]

#: Ancestors kept in ``lineage``, and the longest text of one of their fields.
LINEAGE_MAX, TEXT_MAX = 8, 200
LINEAGE_KEYS = ("name", "date", "trained_by", "init_model", "datasets")


def _now() -> str:
    """The current UTC time, to the second, in ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _short(value: Any) -> str:
    """``value`` as text of at most :data:`TEXT_MAX` characters."""
    text = str(value)
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 3] + "..."


def _entry(meta: dict[str, Any], name: str) -> dict[str, str]:
    """One ``lineage`` entry: the short fields of a model's provenance ``meta``."""
    return {
        "name": _short(name),
        "date": _short(meta.get("date", "unknown")),
        "trained_by": _short(meta.get("trained_by", "unknown")),
        "init_model": _short(meta.get("init_model", "unknown")),
        "datasets": _short(meta.get("datasets", "")),
    }


def _ancestors(meta: dict[str, Any]) -> list[dict[str, str]]:
    """The ancestors a model's provenance ``meta`` lists: its ``lineage``, or in an older file
    its ``init_provenance`` nested in each other."""
    try:
        listed = json.loads(meta.get("lineage") or "[]")
    except (TypeError, ValueError):
        listed = []
    if isinstance(listed, list) and listed:
        return [
            {k: _short(e[k]) for k in LINEAGE_KEYS if k in e} for e in listed if isinstance(e, dict)
        ]
    found: list[dict[str, str]] = []  # an older file: init_provenance nested in each other
    child, nested = meta, meta.get("init_provenance")
    while nested and len(found) < LINEAGE_MAX:
        try:
            parent = json.loads(nested)
        except (TypeError, ValueError):
            break
        if not isinstance(parent, dict):
            break
        found.append(_entry(parent, Path(str(child.get("init_model", "unknown"))).name))
        child, nested = parent, parent.get("init_provenance")
    return found


def model_provenance(
    config: TrainConfig,
    sources: Sequence[PreparedSource],
    notes: Sequence[str],
    best: dict[str, Any] | None,
    epochs_done: int,
    init_meta: dict[str, str] | None,
) -> dict[str, str]:
    """The provenance of a trained model: the run's settings, data and notes, the best epoch's
    scores, and the ``lineage`` of its init model (whose provenance is ``init_meta``)."""
    prov = {
        "trained_by": "ternaus train",
        "date": _now(),
        "datasets": describe_sources(sources),
        "init_model": str(config.init) if config.init else "none (trained from scratch)",
        "epochs": str(epochs_done),
        "epochs_planned": str(config.epochs),
        "steps_per_epoch": str(config.steps_per_epoch),
        "batch_size": str(config.batch_size),
        "crop_px": str(config.crop_px),
        "lr": str(config.lr),
        "seed": str(config.seed),
        "notes": "; ".join(notes),
    }
    if best is not None:
        prov.update(
            best_epoch=str(best.get("epoch")),
            val_f1="n/a" if best.get("val_f1") is None else f"{best['val_f1']:.4f}",
            val_loss=f"{best['val_loss']:.4f}" if best.get("val_loss") is not None else "n/a",
            val_pixel_iou=f"{best['val_iou']:.4f}" if best.get("val_iou") is not None else "n/a",
        )
    if init_meta:
        name = Path(config.init).name if config.init else "unknown"
        lineage = [_entry(init_meta, name), *_ancestors(init_meta)][:LINEAGE_MAX]
        prov["lineage"] = json.dumps(lineage)
    return prov
