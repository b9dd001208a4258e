"""Training recipes: the settings a run leaves open, chosen from what it is given.

``local`` (the default when fine-tuning, ``--init``): made for a few hundred buildings a user
corrected in one neighbourhood, and measured on the rest of the area they never saw
(``benchmarks/bench_loop.py``). The starting model's confident answers on the unlabelled imagery
around the labels (:mod:`.pseudo`: its confident pixels) fill half of every batch, so the network
keeps what it did well there and adapts to that imagery; the weights are pulled toward the starting
model's (L2-SP); a learning rate of 3e-4 and a step count that grows with the number of labelled
buildings (:func:`planned_steps`) keep a fine-tune on a 2-core CPU within about ten minutes.
Afterwards the instance thresholds are tuned on the labelled areas (:mod:`.thresholds`).
Without labels at all it is self-training alone ("Adapt to this imagery"), on the starting
model's buildings (its extracted instances with their touching borders) rather than its pixels.

``classic``: the former settings (10 x 100 steps, learning rate 1e-3, labels only), used for
models trained from scratch, where there is no starting model to learn from.

Fields a request sets itself are never changed; ``None`` fields get the recipe's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import ndimage

from ternaus_backend.errors import InputError

if TYPE_CHECKING:
    from ternaus_backend.training.config import TrainConfig
    from ternaus_backend.training.dataset import PreparedSource, TrainingSource

__all__ = [
    "RecipeName",
    "DEFAULT_INIT",
    "LOCAL",
    "CLASSIC",
    "planned_steps",
    "labelled_buildings",
    "resolve",
    "default_config",
    "estimate_seconds",
]

RecipeName = Literal["local", "classic"]
#: The word that names the embedded default model wherever a model path is asked for.
DEFAULT_INIT = "default"

#: The local recipe: epochs (validation points), learning rate, L2-SP weight, context.
LOCAL: dict[str, Any] = {
    "epochs": 6,
    "lr": 3e-4,
    "l2sp_weight": 1e-3,
    "self_training": True,
    "tune_thresholds": True,
    "freeze_norms": False,
    #: share of the fine-tuned weights kept (:mod:`.blend`), chosen on bench_loop with labels
    #: and without (docs/benchmarks.md)
    "blend": 0.25,
    #: self-training on the teacher's buildings, with labels and without (bench_loop, blended)
    "pseudo_targets": "buildings",
}
CLASSIC: dict[str, Any] = {
    "epochs": 10,
    "steps_per_epoch": 100,
    "lr": 1e-3,
    "l2sp_weight": 0.0,
    "self_training": False,
    "tune_thresholds": False,
    "freeze_norms": False,
    "blend": 1.0,
    "pseudo_targets": "buildings",
}
#: Steps of a local fine-tune: a base plus a few per labelled building, within these bounds.
STEPS_BASE, STEPS_PER_BUILDING, STEPS_MIN, STEPS_MAX = 200, 4, 240, 480
#: Seconds per step of a batch of 8 crops of 256 px of the default model, by device kind, for
#: the estimate before a run: CPU from bench_loop on this 2-core Zen 4 in bf16 (0.65 s in its
#: least loaded epochs, rounded up); CUDA a guess (not measured: no GPU here).
_STEP_SECONDS = {"cpu": 0.75, "cuda": 0.05}
#: Seconds of one validation (an extraction over the validation area) on a CPU.
_VALIDATION_SECONDS = 8.0


def planned_steps(buildings: int) -> int:
    """Total steps of a local fine-tune for ``buildings`` labelled buildings."""
    return int(np.clip(STEPS_BASE + STEPS_PER_BUILDING * buildings, STEPS_MIN, STEPS_MAX))


def labelled_buildings(sources: Sequence[PreparedSource]) -> int:
    """About how many buildings the user labelled in the training pixels (touching ones count
    once)."""
    total = 0
    for source in sources:
        mask = (source.target[0] > 0) & (source.train_weight > 0) & ~source.pseudo_mask
        total += int(ndimage.label(mask)[1])
    return total


def _unset(config: TrainConfig, values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if getattr(config, k) is None}


def resolve(config: TrainConfig, buildings: int | None = None) -> TrainConfig:
    """``config`` with the recipe's values for the fields it leaves ``None``.

    ``buildings``: labelled buildings (:func:`labelled_buildings`), which sets the local
    recipe's step count; ``None`` before the data is read (self-training is decided then).
    """
    local = config.recipe == "local" and config.init is not None
    values = dict(LOCAL if local else CLASSIC)
    if local and buildings is not None:
        steps = planned_steps(buildings)
        values["steps_per_epoch"] = math.ceil(steps / values["epochs"])
    elif local:
        values.pop("epochs")
    labelled = any(s.labels is not None for s in config.sources)
    resolved = config.model_copy(update=_unset(config, values))
    if resolved.self_training and config.init is None:
        raise InputError(
            "Self-training learns from a starting model's answers: give a model to start from "
            "(--init default, or any model file), or train without self-training."
        )
    if not resolved.self_training and not labelled:
        raise InputError(
            "No labels were given: draw or correct buildings and give them as --labels, or "
            "adapt the starting model to the imagery by self-training (--init default)."
        )
    return resolved


def default_config(
    sources: Sequence[TrainingSource],
    out: Path,
    init: str | Path | None = DEFAULT_INIT,
    recipe: RecipeName = "local",
    **fields: Any,
) -> TrainConfig:
    """The configuration the plugin's Train tab sends by default (also the benchmark's)."""
    from ternaus_backend.training.config import TrainConfig

    return TrainConfig(
        sources=list(sources), out=out, init=init, recipe=recipe, overwrite=True, **fields
    )


def estimate_seconds(
    config: TrainConfig, buildings: int, device_kind: str = "cpu", reading: bool = True
) -> float:
    """A rough duration of the run (steps x seconds per step, validations, and with
    ``reading`` the reading and self-training targets still to come), shown before it starts."""
    resolved = resolve(config, buildings)
    steps = resolved.epochs * resolved.steps_per_epoch
    per_step = _STEP_SECONDS.get(device_kind, _STEP_SECONDS["cpu"])
    per_step *= resolved.batch_size / 8 * (resolved.crop_px / 256) ** 2
    overhead = _VALIDATION_SECONDS * resolved.epochs
    if reading:
        overhead += 20.0 + (30.0 if resolved.self_training else 0.0)
    return steps * per_step + overhead
