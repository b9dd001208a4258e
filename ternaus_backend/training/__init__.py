"""Training on user-labelled layers: targets, dataset, augmentations, losses and the loop.

``train(TrainConfig(...), progress, cancel) -> TrainResult`` is the entry point (also behind
``ternaus train``). Names are imported lazily so that ``training.targets`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "TrainResult": "config",
    "train": "loop",
    "checkpoint_path": "checkpoint",
    "TrainingSource": "dataset",
    "BceJaccardLoss": "losses",
    "add_train_parser": "command",
    "run_train": "command",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
