"""The training loop: AdamW + warm-up/cosine schedule, validation through the real pipeline.

``train(config, progress, cancel)`` prepares the sources (:mod:`.dataset`), builds or loads the
network (:mod:`.finetune`), trains on random augmented crops with :class:`.losses.BceJaccardLoss`
and, after every epoch, validates on the validation area (:mod:`.validation`: loss, body pixel
IoU, SpaceNet F1 through the real extraction pipeline).

The best epoch (highest ``val_f1``, ties by lower ``val_loss``) is saved to ``config.out`` with
full metadata. ``config.out`` is only ever replaced by a validated model: a run cancelled before
its first validation saves its unvalidated weights to ``config.out`` only when that file does not
exist yet, else beside it (:func:`unvalidated_path`), so an earlier model (``--init X --out X``
included) stays intact. A resumable checkpoint (model, optimizer, scheduler, scaler, epoch, best
score, RNG state) is written to ``<out>.ckpt.pt`` after every epoch. Files are replaced
atomically, so an interrupted run never leaves a broken model. Mixed precision (``amp``, the
default): on CUDA the forward pass runs under ``torch.autocast`` (float16) with a ``GradScaler``;
on a CPU with native bf16 units (AVX512-BF16, AMX) under bf16 autocast, about 2x faster; elsewhere,
and with ``amp=False``, in float32. On a CPU, In-Place ABN is swapped for the pure version (faster
there, and it runs under autocast); the saved weights are the same either way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, field_validator
from torch import nn
from torch.utils.data import DataLoader

from ternaus_backend.errors import CancelledError, InputError, TernausError
from ternaus_backend.models.abn import activated_norms, to_pure_abn
from ternaus_backend.models.metadata import ModelMetadata
from ternaus_backend.outputs import check_output
from ternaus_backend.pipeline.engine import cpu_has_native_bf16
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from ternaus_backend.training import ddp, recipe
from ternaus_backend.training.calibration import calibration_step
from ternaus_backend.training.dataset import (
    CropDataset,
    PreparedSource,
    TrainingSource,
    describe_sources,
    input_band_names,
    native_resolution_m,
    prepare_sources,
)
from ternaus_backend.training.finetune import build_model, with_scaling
from ternaus_backend.training.losses import BceJaccardLoss
from ternaus_backend.training.pseudo import add_pseudo_labels
from ternaus_backend.training.recipe import DEFAULT_INIT
from ternaus_backend.training.validation import validate

log = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "EpochStats",
    "train",
    "checkpoint_path",
    "unvalidated_path",
]

CHECKPOINT_FORMAT = "ternaus-train-checkpoint/1"


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


def training_autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast type of the training forward pass: float16 on CUDA, bf16 on a CPU with native
    bf16 units (emulated bf16 would be slower than float32), ``None`` (float32) otherwise."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def checkpoint_path(out: Path) -> Path:
    """The resumable checkpoint beside a model file: ``<out>.ckpt.pt``."""
    return out.with_name(out.name + ".ckpt.pt")


def unvalidated_path(out: Path) -> Path:
    """Where a cancelled run's unvalidated weights go when ``out`` already holds a model."""
    return out.with_name(out.stem + ".unvalidated.safetensors")


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine down to ``floor``."""

    def __init__(self, warmup: int, total: int, floor: float = 0.01) -> None:
        self.warmup = warmup
        self.total = max(total, 1)
        self.floor = floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


# -- helpers ---------------------------------------------------------------------------------


def _atomic_replace(write: Any, path: Path) -> None:
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


def _save_model(model: nn.Module, meta: ModelMetadata, path: Path) -> None:
    from ternaus_backend.models.model_file import save_model  # writes atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, meta, path)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _is_better(f1: float | None, loss: float, best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    if f1 is not None and best.get("val_f1") is not None:
        if f1 > best["val_f1"] + 1e-9:
            return True
        if f1 < best["val_f1"] - 1e-9:
            return False
    return loss < best["val_loss"]


# -- training -------------------------------------------------------------------------------


def _provenance(
    config: TrainConfig,
    sources: Sequence[PreparedSource],
    notes: Sequence[str],
    best: dict[str, Any] | None,
    epochs_done: int,
    init_meta: dict[str, str] | None,
) -> dict[str, str]:
    """The provenance of a trained model. A fine-tuned model's ancestry is ``lineage``: a JSON
    list of at most 8 ancestors, nearest first, each a few short fields (name, date,
    trained_by, init_model, datasets), made of the init model's own ``lineage`` (or, in older
    files, its nested ``init_provenance``) plus the init model itself, so the header stays the
    same size however many generations of fine-tuning there are."""
    lineage_max, text_max = 8, 200
    keys = ("name", "date", "trained_by", "init_model", "datasets")

    def short(value: Any) -> str:
        text = str(value)
        return text if len(text) <= text_max else text[: text_max - 3] + "..."

    def entry(meta: dict[str, Any], name: str) -> dict[str, str]:
        return {
            "name": short(name),
            "date": short(meta.get("date", "unknown")),
            "trained_by": short(meta.get("trained_by", "unknown")),
            "init_model": short(meta.get("init_model", "unknown")),
            "datasets": short(meta.get("datasets", "")),
        }

    def ancestors(meta: dict[str, Any]) -> list[dict[str, str]]:
        try:
            listed = json.loads(meta.get("lineage") or "[]")
        except (TypeError, ValueError):
            listed = []
        if isinstance(listed, list) and listed:
            return [{k: short(e[k]) for k in keys if k in e} for e in listed if isinstance(e, dict)]
        found: list[dict[str, str]] = []  # an older file: init_provenance nested in each other
        child, nested = meta, meta.get("init_provenance")
        while nested and len(found) < lineage_max:
            try:
                parent = json.loads(nested)
            except (TypeError, ValueError):
                break
            if not isinstance(parent, dict):
                break
            found.append(entry(parent, Path(str(child.get("init_model", "unknown"))).name))
            child, nested = parent, parent.get("init_provenance")
        return found

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
        lineage = [entry(init_meta, name), *ancestors(init_meta)][:lineage_max]
        prov["lineage"] = json.dumps(lineage)
    return prov


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_checkpoint(path: Path) -> dict[str, Any]:
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


def _band_names(sources: Sequence[TrainingSource]) -> list[str]:
    names = {tuple(input_band_names(s.rgb, s.ms)) for s in _checked_paths(sources)}
    if len(names) > 1:
        raise InputError(
            "Give a multispectral raster (--ms) for every RGB raster, or for none: the training "
            "rasters must all have the same bands."
        )
    return list(names.pop())


def _checked_paths(sources: Sequence[TrainingSource]) -> Sequence[TrainingSource]:
    for s in sources:
        for role, path in (("RGB raster", s.rgb), ("multispectral raster", s.ms)):
            if path is not None and not Path(path).exists():
                raise InputError(f"The {role} {path} does not exist; check the path.")
    return sources


def train(
    config: TrainConfig,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train (or fine-tune) a model as ``config`` says; see the module docstring.

    Raises ``CancelledError`` (with ``.result``, a :class:`TrainResult`) when ``cancel`` is set:
    the best model so far is kept (or, before the first epoch finished, the current weights are
    saved unvalidated: to ``config.out`` if it does not exist, else to
    :func:`unvalidated_path`, leaving ``config.out`` untouched). Cancelled while the sources are
    read, it raises ``CancelledError`` without ``.result`` (nothing written).
    """
    started = time.perf_counter()
    cancel = cancel or CancelToken()
    ranks = ddp.Ranks.from_env()  # torchrun: several processes; else rank 0 of 1
    device = ddp.start(ranks, config.device)
    if not ranks.main:
        progress = no_progress  # rank 0 reports, validates and writes
    torch.manual_seed(config.seed)
    out = check_output(
        config.out,
        suffix=".safetensors",
        kind="model file",
        overwrite=config.overwrite or config.resume,
        create_folder=True,
    )
    ckpt_path = checkpoint_path(out)
    ckpt = _load_checkpoint(ckpt_path) if config.resume else None
    config = _recipe_settings(config, ckpt)
    model, meta, notes, init_provenance = _network(config, ckpt, ckpt_path, out)
    sources = _read_sources(config, meta, progress, cancel)
    resampled = [s.name for s in sources if s.resampled]
    if resampled and ckpt is None:
        notes.append(f"resampled to {meta.resolution_m} m: {', '.join(resampled)}")
    model.metadata = meta
    if config.self_training:
        model.to(device)  # the teacher runs where training will
        progress(ProgressEvent("prepare", len(sources), len(sources), {"source": "self-training"}))
        notes += add_pseudo_labels(
            model, sources, device, cancel=cancel, border_width_px=config.border_width_px
        )
    buildings = recipe.labelled_buildings(sources)
    config = recipe.resolve(config, buildings)
    plan = f"{config.epochs} x {config.steps_per_epoch} steps, {buildings} labelled buildings"
    plan += ", self-training" if config.self_training else ""
    notes.append(f"{plan} (recipe {config.recipe}, lr {config.lr:g}, L2-SP {config.l2sp_weight:g})")
    total_steps = config.epochs * config.steps_per_epoch
    eta = recipe.estimate_seconds(config, buildings, device.type, reading=False)
    progress(ProgressEvent("plan", 0, total_steps, {"phase": "plan", "plan": plan, "eta_s": eta}))
    if device.type == "cpu":
        to_pure_abn(model)  # faster on a CPU, and it runs under bf16 autocast
    model.to(device).train()

    dataset = CropDataset(
        sources,
        config.crop_px,
        config.steps_per_epoch * config.batch_size,
        seed=config.seed,
        positive_fraction=config.positive_fraction,
        pseudo_share=config.pseudo_share,
    )
    loader = DataLoader(
        dataset,
        batch_size=ddp.rank_batch(config.batch_size, ranks),
        sampler=ddp.sampler(dataset, ranks),
        shuffle=False,
        drop_last=True,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    steps = _Steps.create(config, model, device, ckpt)
    run = _Run(
        config, model, meta, sources, notes, init_provenance, out, ckpt_path, progress, started
    )
    if ckpt is not None:
        _set_rng_state(ckpt["rng"])
        run.best, run.history = ckpt.get("best"), list(ckpt["history"])
        run.epochs_done = int(ckpt["epoch"])
    run.plan = plan
    epochs = _Epochs(
        config, run, steps, ddp.wrap(model, ranks, device), dataset, loader, ranks, device
    )
    try:
        epochs.train_all(progress, cancel)
        labelled = any(s.source.labels is not None for s in sources)
        if config.tune_thresholds and labelled and ranks.main and run.best is not None:
            run.tune_thresholds(device, progress, cancel)
        calibration = None
        if ranks.main and run.best is not None:  # after the thresholds: fitted to the final ones
            calibration = calibration_step(run, device, progress, cancel)
    except CancelledError as exc:
        raise _cancelled(run, out, epochs.crops_per_s) from exc
    return replace(run.result("completed", epochs.crops_per_s), calibration=calibration)


def _recipe_settings(config: TrainConfig, ckpt: dict[str, Any] | None) -> TrainConfig:
    """The recipe's settings that do not depend on the data; a resumed run takes the
    checkpointed run's settings for what the request leaves open."""
    if ckpt is not None and ckpt.get("config"):
        saved = json.loads(ckpt["config"])
        keys = (
            "epochs",
            "steps_per_epoch",
            "lr",
            "self_training",
            "l2sp_weight",
            "tune_thresholds",
        )
        update = {k: saved.get(k) for k in keys if getattr(config, k) is None}
        config = config.model_copy(update={k: v for k, v in update.items() if v is not None})
    return recipe.resolve(config)


def _network(
    config: TrainConfig, ckpt: dict[str, Any] | None, ckpt_path: Path, out: Path
) -> tuple[nn.Module, ModelMetadata, list[str], dict[str, str] | None]:
    """The network to train, its metadata, notes and the init model's provenance: from the
    checkpoint when resuming, else new or from ``config.init``."""
    band_names = _band_names(config.sources)
    if ckpt is not None:
        from ternaus_backend.models.registry import create_model_from_metadata

        meta = ModelMetadata.model_validate_json(ckpt["metadata"])
        if list(meta.band_names) != band_names:
            raise InputError(
                f"The checkpoint {ckpt_path.name} was trained on bands {meta.band_names}, the "
                f"inputs have {band_names}; resume with the same rasters or train afresh."
            )
        model = create_model_from_metadata(meta)
        model.load_state_dict(ckpt["model"])
        _check_resume_resolution(config, meta, ckpt_path)
        _check_resume_request(config, ckpt, ckpt_path, out)
        notes = list(ckpt.get("notes", [])) + [f"resumed after epoch {ckpt['epoch']}"]
        init_provenance = ckpt.get("init_provenance")
    else:
        model, meta, notes = build_model(
            band_names, config.resolution_m, config.init, config.encoder
        )
        if meta.resolution_m <= 0:  # a new model (or an init model without a resolution)
            meta.resolution_m = native_resolution_m(config.sources)
            notes.append(
                f"ground resolution {meta.resolution_m} m (the median pixel size of the "
                "training rasters)"
            )
        init_provenance = dict(meta.provenance) if config.init is not None else None
        if config.scaling is not None:
            meta.normalization = with_scaling(meta.normalization, config.scaling)
        if config.name:
            meta.name = config.name
    for note in notes:
        log.info(note)
    return model, meta, notes, init_provenance


def _read_sources(
    config: TrainConfig, meta: ModelMetadata, progress: ProgressCallback, cancel: CancelToken
) -> list[PreparedSource]:
    """The training rasters read at the model's resolution, with targets and areas."""
    try:
        return prepare_sources(
            config.sources,
            meta.normalization,
            val_fraction=config.val_fraction,
            seed=config.seed,
            border_width_px=config.border_width_px,
            allow_empty_labels=config.allow_empty_labels,
            margin_px=config.crop_px,
            resolution_m=meta.resolution_m,
            progress=progress,
            cancel=cancel,
            context_px=config.context_px if config.self_training else 0,
        )
    except CancelledError as exc:
        raise CancelledError(
            "Training was cancelled while reading the training data; nothing was written "
            "(earlier models and checkpoints are unchanged)."
        ) from exc


@dataclass
class _Steps:
    """One optimiser step: loss, AdamW, warm-up/cosine schedule, gradient scaler, autocast."""

    loss_fn: BceJaccardLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    #: L2-SP: the starting weights and the pull toward them (none when the weight is 0)
    anchor: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list)
    l2sp_weight: float = 0.0

    @classmethod
    def create(
        cls, config: TrainConfig, model: nn.Module, device: torch.device, ckpt: dict | None
    ) -> _Steps:
        """Fresh, or restored from the checkpoint (the schedule is this run's, see
        :func:`_resumed_scheduler`)."""
        autocast_dtype = training_autocast_dtype(device, config.amp)
        if autocast_dtype is not None:
            log.info("mixed precision: %s autocast on %s", autocast_dtype, device.type)
        scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        total_steps = config.epochs * config.steps_per_epoch
        schedule = WarmupCosine(int(config.warmup_fraction * total_steps), total_steps)
        if ckpt is None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        else:
            optimizer.load_state_dict(ckpt["optimizer"])  # holds each group's initial_lr
            last = int(ckpt["scheduler"]["last_epoch"])
            scheduler = _resumed_scheduler(optimizer, schedule, last)
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        loss_fn = BceJaccardLoss(config.jaccard_weight)
        anchor = []
        if config.l2sp_weight and config.init is not None:
            anchor = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]
        return cls(
            loss_fn, optimizer, scheduler, scaler, autocast_dtype, anchor, config.l2sp_weight or 0
        )

    def l2sp(self) -> torch.Tensor | float:
        """``l2sp_weight / 2 * sum |w - w0|^2`` over the starting weights (0 without)."""
        if not self.anchor:
            return 0.0
        total = sum(((p - a) ** 2).sum() for p, a in self.anchor)
        return 0.5 * self.l2sp_weight * total

    def take(
        self,
        net: nn.Module,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        device: torch.device,
        ranks: ddp.Ranks,
        where: str,
    ) -> float:
        """One step on ``batch``; returns the global batch's loss (the same on every rank)."""
        image = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        weight = batch["weight"].to(device, non_blocking=True)
        dtype = self.autocast_dtype
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(image)
        loss = self.loss_fn(logits, target, weight)
        loss_value = ddp.mean(loss, ranks)
        loss = loss + self.l2sp()
        if not math.isfinite(loss_value):
            raise TernausError(
                "Training diverged (the loss is not finite); lower the learning rate (--lr) and "
                "train again.",
                details=where,
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss_value


class _Epochs:
    """The epochs of a run: training steps with progress, then validation and a checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        run: _Run,
        steps: _Steps,
        net: nn.Module,
        dataset: CropDataset,
        loader: DataLoader,
        ranks: ddp.Ranks,
        device: torch.device,
    ) -> None:
        self.config, self.run, self.steps, self.net = config, run, steps, net
        self.dataset, self.loader, self.ranks, self.device = dataset, loader, ranks, device
        self.total_steps = config.epochs * config.steps_per_epoch
        self.step_seconds: list[float] = []
        self.val_seconds = 0.0
        self.crops_per_s = 0.0
        history = run.history
        self.last_f1 = history[-1].get("val_f1") if history else None
        #: The last validated epoch's report, repeated in every step's report: a client that
        #: polls only the latest report still sees every epoch it did not miss entirely.
        self.last_validated: dict[str, Any] | None = None

    def train_all(self, progress: ProgressCallback, cancel: CancelToken) -> None:
        """The epochs left, from the checkpoint's (or the first)."""
        for epoch in range(self.run.epochs_done, self.config.epochs):
            self.dataset.set_epoch(epoch)
            train_loss, train_seconds = self._train(epoch, progress, cancel)
            cancel.raise_if_cancelled()
            if self.ranks.main:
                self._validate(epoch, train_loss, train_seconds, progress, cancel)
            ddp.barrier(self.ranks)

    def _train(
        self, epoch: int, progress: ProgressCallback, cancel: CancelToken
    ) -> tuple[float, float]:
        """One epoch of steps; returns the mean loss and the seconds it took."""
        config, model = self.config, self.run.model
        model.train()
        if config.freeze_norms:
            for _, _, norm in activated_norms(model):
                norm.eval()
        epoch_loss, epoch_start = 0.0, time.perf_counter()
        tick = epoch_start
        for step, batch in enumerate(self.loader):
            cancel.raise_if_cancelled()
            where = f"epoch {epoch + 1}, step {step + 1}"
            epoch_loss += self.steps.take(self.net, model, batch, self.device, self.ranks, where)
            now = time.perf_counter()
            self.step_seconds.append(now - tick)
            tick = now
            per_step = _mean_step(self.step_seconds)
            self.crops_per_s = config.batch_size / per_step if per_step > 0 else 0.0
            done = epoch * config.steps_per_epoch + step + 1
            eta = per_step * (self.total_steps - done) + self.val_seconds * (config.epochs - epoch)
            info = {
                "phase": "step",
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "step": step + 1,
                "steps": config.steps_per_epoch,
                "loss": epoch_loss / (step + 1),
                "lr": self.steps.scheduler.get_last_lr()[0],
                "crops_per_s": self.crops_per_s,
                "eta_s": eta,
                "val_f1": self.last_f1,
                "last_validated": self.last_validated,
                "plan": self.run.plan,
            }
            progress(ProgressEvent("train", done, self.total_steps, info))
        return epoch_loss / config.steps_per_epoch, time.perf_counter() - epoch_start

    def _validate(
        self,
        epoch: int,
        train_loss: float,
        train_seconds: float,
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> None:
        """Validation, the best model and the checkpoint after an epoch (rank 0)."""
        config, run = self.config, self.run
        t0 = time.perf_counter()
        if any(source.has_validation for source in run.sources):
            stats = validate(
                run.model,
                run.sources,
                run.meta,
                self.steps.loss_fn,
                self.device,
                config.crop_px,
                config.batch_size,
                cancel,
            )
        else:  # self-training alone: nothing to validate on, the last epoch is kept
            stats = {"val_loss": None, "val_iou": None, "val_f1": None}
            stats.update(val_tp=0, val_fp=0, val_fn=0)
        self.val_seconds = time.perf_counter() - t0
        epoch_stats = EpochStats(
            epoch=epoch + 1,
            train_loss=train_loss,
            val_loss=stats["val_loss"],
            val_iou=stats["val_iou"],
            val_f1=stats["val_f1"],
            val_tp=stats["val_tp"],
            val_fp=stats["val_fp"],
            val_fn=stats["val_fn"],
            seconds=train_seconds + self.val_seconds,
            crops_per_s=config.steps_per_epoch * config.batch_size / train_seconds,
        )
        self.last_f1 = epoch_stats.val_f1
        run.end_epoch(epoch_stats)
        run.save_checkpoint(self.steps.optimizer, self.steps.scheduler, self.steps.scaler)
        done = (epoch + 1) * config.steps_per_epoch
        eta = _mean_step(self.step_seconds) * (self.total_steps - done) + self.val_seconds * (
            config.epochs - epoch - 1
        )
        info = {
            "phase": "validated",
            "epoch": epoch + 1,
            "epochs": config.epochs,
            "loss": epoch_stats.train_loss,
            "val_loss": epoch_stats.val_loss,
            "val_iou": epoch_stats.val_iou,
            "val_f1": epoch_stats.val_f1,
            "best": epoch_stats.best,
            "crops_per_s": epoch_stats.crops_per_s,
            "eta_s": eta,
        }
        self.last_validated = info
        progress(ProgressEvent("train", done, self.total_steps, info))


def _cancelled(run: _Run, out: Path, crops_per_s: float) -> CancelledError:
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


def _check_resume_resolution(config: TrainConfig, meta: ModelMetadata, ckpt_path: Path) -> None:
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


def _check_resume_request(
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


def _resumed_scheduler(
    optimizer: torch.optim.Optimizer, schedule: WarmupCosine, step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR at optimizer step ``step`` of ``schedule`` (this run's total, not the old one).

    The checkpoint's scheduler state is not loaded: it would restore the old run's schedule
    (``WarmupCosine.total`` from its ``--epochs``). Building the scheduler with
    ``last_epoch=step - 1`` makes its initial step land on ``step`` with the new schedule's LR.
    """
    if step < 1:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule, last_epoch=step - 1)


def _mean_step(seconds: Sequence[float]) -> float:
    recent = list(seconds[-20:])
    return sum(recent) / len(recent) if recent else 0.0


class _Run:
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

    def _metadata(self, extra_notes: Sequence[str] = ()) -> ModelMetadata:
        meta = self.meta.model_copy(deep=True)
        meta.provenance = _provenance(
            self.config,
            self.sources,
            [*self.notes, *extra_notes],
            self.best,
            self.epochs_done,
            self.init_provenance,
        )
        return meta

    def end_epoch(self, stats: EpochStats) -> None:
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
            _save_model(self.model, self._metadata(), self.out)
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
        _save_model(best, meta, self.out)
        progress(ProgressEvent("thresholds", 1, 1, {"phase": "thresholds", "note": note}))

    def save_checkpoint(self, optimizer: Any, scheduler: Any, scaler: Any) -> None:
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
            "rng": _rng_state(),
            "notes": [n for n in self.notes if not n.startswith("resumed after")],
            "init_provenance": self.init_provenance,
            "config": self.config.model_dump_json(),
        }
        try:
            _atomic_replace(lambda tmp: torch.save(state, tmp), self.ckpt_path)
        except (OSError, RuntimeError) as error:
            from ternaus_backend.errors import DiskFullError
            from ternaus_backend.outputs import looks_like_full_disk

            weights = sum(t.numel() * t.element_size() for t in state["model"].values())
            if not looks_like_full_disk(error, self.ckpt_path.parent, 3 * weights):
                raise
            best = (
                f"the best model so far is {self.out}"
                if self.out.exists()
                else "no model has been saved yet"
            )
            raise DiskFullError(
                f"Cannot save the training checkpoint {self.ckpt_path}: the disk is full: free "
                f"space in {self.ckpt_path.parent}; {best}.",
                details=f"{type(error).__name__}: {error}",
            ) from error

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
            _save_model(self.model, self._metadata(), path)
            self.unvalidated_saved = path
        return self.result("cancelled", crops_per_s)

    def result(self, status: Literal["completed", "cancelled"], crops_per_s: float) -> TrainResult:
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
