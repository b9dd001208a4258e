"""What a training run is given and what it gives back.

:class:`TrainConfig` is the request (the CLI and the HTTP API fill it; settings left ``None`` are
filled by the recipe, :mod:`.recipe`), :class:`EpochStats` what one epoch measured and
:class:`TrainResult` the outcome of :func:`~ternaus_backend.training.loop.train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ternaus_backend.training.dataset import TrainingSource
from ternaus_backend.training.recipe import DEFAULT_INIT

__all__ = ["TrainConfig", "EpochStats", "TrainResult"]


class TrainConfig(BaseModel):
    """Everything one training run needs (the CLI and the HTTP API fill it)."""

    sources: list[TrainingSource] = Field(min_length=1)
    out: Path
    init: Path | None = None
    encoder: str | None = None  # default: resnet_light, or the init model's encoder
    #: Ground resolution (m) every source is read at and the model works at. Default: the init
    #: model's with --init (or the checkpoint's with --resume), else the median of the sources'.
    resolution_m: float | None = Field(None, gt=0)
    #: How raw pixel values are scaled (``BandScaling.method``). Default: the init model's, or
    #: ``auto`` for a new model (8-bit rasters / 255, others per-band percentiles).
    scaling: Literal["auto", "percentile"] | None = None
    #: The recipe that fills the settings left ``None`` (:mod:`.recipe`): ``local`` (fine-tuning
    #: on a few local labels with self-training on the imagery around them) or ``classic``.
    recipe: Literal["local", "classic"] = "local"
    epochs: int | None = Field(None, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    crop_px: int = 256
    lr: float | None = Field(None, gt=0)
    #: Train on the starting model's confident answers over the unlabelled imagery around the
    #: labels too (:mod:`.pseudo`); without labels, self-training alone.
    self_training: bool | None = None
    #: Side (px at the model's resolution) of the imagery read around the labels for it.
    context_px: int = Field(2048, ge=0)
    #: Share of each batch's crops drawn from the self-training pixels.
    pseudo_share: float = Field(0.5, ge=0, le=1)
    #: Pull toward the starting model's weights (L2-SP): ``l2sp_weight / 2 * |w - w0|^2``.
    l2sp_weight: float | None = Field(None, ge=0)
    #: After training, tune the instance thresholds on the labelled areas (:mod:`.thresholds`).
    tune_thresholds: bool | None = None
    #: Keep the batch norms' running statistics of the starting model (their scale and shift
    #: still learn): a few hundred crops of one neighbourhood do not move them away from the
    #: statistics of the data the model was trained on.
    freeze_norms: bool | None = None
    #: Share of the fine-tuned weights in the saved model, the rest the starting model's
    #: (:mod:`.blend`): keeps what the model knew beyond the labelled neighbourhood; 1 saves the
    #: fine-tuned weights as they are; ``None``: the recipe's.
    blend: float | None = Field(None, gt=0, le=1)
    #: What the self-training targets are (:mod:`.pseudo`): the teacher's ``buildings`` (its
    #: extracted instances, with touching borders as for drawn labels) or its confident
    #: ``pixels``; ``None``: the recipe's (buildings).
    pseudo_targets: Literal["buildings", "pixels"] | None = None
    weight_decay: float = Field(1e-4, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    jaccard_weight: float = Field(0.5, ge=0)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    border_width_px: int = Field(3, ge=1)
    positive_fraction: float = Field(0.7, ge=0, le=1)
    allow_empty_labels: bool = False
    seed: int = 0
    device: str = "auto"
    num_workers: int = Field(0, ge=0)
    amp: bool = True  # mixed precision: float16 on CUDA, bf16 on a CPU with native bf16
    resume: bool = False
    #: Replace an existing ``out`` (otherwise refused; a resumed run continues its own ``out``).
    overwrite: bool = False
    name: str | None = None

    @field_validator("init", mode="before")
    @classmethod
    def _default_init(cls, value: Any) -> Any:
        """The word ``default`` names the embedded default model."""
        if value is not None and str(value) == DEFAULT_INIT and not Path(DEFAULT_INIT).exists():
            from ternaus_backend.pipeline.extract import DEFAULT_MODEL

            return DEFAULT_MODEL
        return value

    @field_validator("crop_px")
    @classmethod
    def _crop_multiple_of_32(cls, value: int) -> int:
        """The network halves the crop five times: it must be a multiple of 32."""
        if value < 32 or value % 32:
            raise ValueError(f"the crop size must be a multiple of 32 (e.g. 256), got {value}")
        return value


@dataclass
class EpochStats:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_iou: float | None
    val_f1: float | None
    val_tp: int = 0
    val_fp: int = 0
    val_fn: int = 0
    seconds: float = 0.0
    crops_per_s: float = 0.0
    best: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (an entry of ``TrainResult.history``)."""
        return dict(self.__dict__)


@dataclass
class TrainResult:
    """Outcome of ``train``: where the best model is and how it scored."""

    status: Literal["completed", "cancelled"]
    model_path: Path | None
    checkpoint_path: Path
    epochs_completed: int
    best_epoch: int | None
    best_val_f1: float | None
    best_val_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    crops_per_s: float = 0.0
    #: The confidence calibration fitted after training (:mod:`.calibration`): buildings, ECE
    #: and reliability diagram before/after; ``None`` without labelled validation areas.
    calibration: dict[str, Any] | None = None
