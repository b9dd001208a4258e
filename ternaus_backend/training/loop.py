"""The training loop: AdamW + warm-up/cosine schedule, validation through the real pipeline.

``train(config, progress, cancel)`` prepares the sources (:mod:`.dataset`), builds or loads the
network (:mod:`.finetune`), trains on random augmented crops with :class:`.losses.BceJaccardLoss`
and, after every epoch, validates on the validation area (:mod:`.validation`: loss, body pixel
IoU, SpaceNet F1 through the real extraction pipeline).

It is a sequence of named steps; the machinery lives beside it:

- :mod:`.config`: :class:`TrainConfig`, :class:`EpochStats`, :class:`TrainResult`;
- :mod:`.checkpoint`: the best model in ``config.out`` (only ever replaced by a validated model),
  the resumable checkpoint ``<out>.ckpt.pt`` written after every epoch, atomic replacement, and
  the checks a resumed run passes;
- :mod:`.provenance`: the provenance and lineage the saved model carries;
- :mod:`.steps`: one optimiser step, mixed precision (float16 on CUDA, bf16 on a CPU with native
  bf16 units, else float32);
- :mod:`.epochs`: the epochs, with progress reports, validation and a checkpoint after each;
- :mod:`.run`: the run's book-keeping (best score, history, saving, the cancelled run's result).

On a CPU, In-Place ABN is swapped for the pure version (faster there, and it runs under
autocast); the saved weights are the same either way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ternaus_backend.errors import CancelledError, InputError
from ternaus_backend.models.abn import to_pure_abn
from ternaus_backend.models.metadata import ModelMetadata
from ternaus_backend.outputs import check_output
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from ternaus_backend.training import ddp, recipe
from ternaus_backend.training.blend import StateDict, starting_state
from ternaus_backend.training.calibration import calibration_step
from ternaus_backend.training.checkpoint import (
    check_resume_bands,
    check_resume_request,
    check_resume_resolution,
    checkpoint_path,
    load_checkpoint,
    unvalidated_path,
)
from ternaus_backend.training.config import EpochStats, TrainConfig, TrainResult
from ternaus_backend.training.dataset import (
    CropDataset,
    PreparedSource,
    TrainingSource,
    input_band_names,
    native_resolution_m,
    prepare_sources,
)
from ternaus_backend.training.epochs import Epochs
from ternaus_backend.training.finetune import build_model, with_scaling
from ternaus_backend.training.pseudo import add_pseudo_labels
from ternaus_backend.training.run import Run, cancelled_error
from ternaus_backend.training.steps import Steps

log = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "EpochStats",
    "train",
    "checkpoint_path",
    "unvalidated_path",
]


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
    ranks, device, progress = _start(config, progress)
    out = _output(config)
    ckpt_path = checkpoint_path(out)
    ckpt = load_checkpoint(ckpt_path) if config.resume else None
    config = _recipe_settings(config, ckpt)
    model, meta, notes, init_provenance = _network(config, ckpt, ckpt_path, out)
    start = _starting_weights(config, model, ckpt)
    sources = _read_sources(config, meta, progress, cancel)
    if ckpt is None:
        notes += _resampled_notes(sources, meta)
    if config.self_training:
        notes += _self_training(config, model, sources, device, progress, cancel)
    config, plan = _plan(config, sources, notes, device, progress)
    _place_model(model, device)
    dataset, loader = _crops(config, sources, ranks, device)
    steps = Steps.create(config, model, device, ckpt)
    run = Run(
        config, model, meta, sources, notes, init_provenance, out, ckpt_path, progress, started
    )
    if ckpt is not None:
        run.restore(ckpt)
    run.plan = plan
    net = ddp.wrap(model, ranks, device)
    epochs = Epochs(config, run, steps, net, dataset, loader, ranks, device)
    try:
        epochs.train_all(progress, cancel)
        calibration = _after_training(config, run, start, ranks, device, progress, cancel)
    except CancelledError as exc:
        _blend(run, start, ranks, device, no_progress)  # the kept model follows the recipe too
        raise cancelled_error(run, out, epochs.crops_per_s) from exc
    return replace(run.result("completed", epochs.crops_per_s), calibration=calibration)


def _start(
    config: TrainConfig, progress: ProgressCallback
) -> tuple[ddp.Ranks, torch.device, ProgressCallback]:
    """Join the processes (several under torchrun, else rank 0 of 1), pick the device and seed
    the random generators; only rank 0 reports progress (it also validates and writes)."""
    ranks = ddp.Ranks.from_env()
    device = ddp.start(ranks, config.device)
    if not ranks.main:
        progress = no_progress
    torch.manual_seed(config.seed)
    return ranks, device, progress


def _output(config: TrainConfig) -> Path:
    """The model file to write, checked (an existing one only with ``overwrite`` or
    ``resume``); its folder is created."""
    return check_output(
        config.out,
        suffix=".safetensors",
        kind="model file",
        overwrite=config.overwrite or config.resume,
        create_folder=True,
    )


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
            "blend",
        )
        update = {k: saved.get(k) for k in keys if getattr(config, k) is None}
        config = config.model_copy(update={k: v for k, v in update.items() if v is not None})
    return recipe.resolve(config)


def _network(
    config: TrainConfig, ckpt: dict[str, Any] | None, ckpt_path: Path, out: Path
) -> tuple[nn.Module, ModelMetadata, list[str], dict[str, str] | None]:
    """The network to train (its ``metadata`` set), its metadata, notes and the init model's
    provenance: from the checkpoint when resuming, else new or from ``config.init``."""
    band_names = _band_names(config.sources)
    if ckpt is not None:
        from ternaus_backend.models.registry import create_model_from_metadata

        meta = ModelMetadata.model_validate_json(ckpt["metadata"])
        check_resume_bands(meta, band_names, ckpt_path)
        model = create_model_from_metadata(meta)
        model.load_state_dict(ckpt["model"])
        check_resume_resolution(config, meta, ckpt_path)
        check_resume_request(config, ckpt, ckpt_path, out)
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
    model.metadata = meta  # the self-training teacher, validation and saving read it
    return model, meta, notes, init_provenance


def _band_names(sources: Sequence[TrainingSource]) -> list[str]:
    """The input bands every source has in common; sources with other bands are refused."""
    names = {tuple(input_band_names(s.rgb, s.ms)) for s in _checked_paths(sources)}
    if len(names) > 1:
        raise InputError(
            "Give a multispectral raster (--ms) for every RGB raster, or for none: the training "
            "rasters must all have the same bands."
        )
    return list(names.pop())


def _checked_paths(sources: Sequence[TrainingSource]) -> Sequence[TrainingSource]:
    """``sources``, once every raster they name is known to exist."""
    for s in sources:
        for role, path in (("RGB raster", s.rgb), ("multispectral raster", s.ms)):
            if path is not None and not Path(path).exists():
                raise InputError(f"The {role} {path} does not exist; check the path.")
    return sources


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


def _resampled_notes(sources: Sequence[PreparedSource], meta: ModelMetadata) -> list[str]:
    """A note naming the sources read at another resolution than their own (none if none)."""
    resampled = [s.name for s in sources if s.resampled]
    return [f"resampled to {meta.resolution_m} m: {', '.join(resampled)}"] if resampled else []


def _self_training(
    config: TrainConfig,
    model: nn.Module,
    sources: Sequence[PreparedSource],
    device: torch.device,
    progress: ProgressCallback,
    cancel: CancelToken,
) -> list[str]:
    """Label the imagery around the labels with the starting model's confident answers
    (:mod:`.pseudo`); returns the notes it makes."""
    model.to(device)  # the teacher runs where training will
    progress(ProgressEvent("prepare", len(sources), len(sources), {"source": "self-training"}))
    return add_pseudo_labels(
        model,
        sources,
        device,
        cancel=cancel,
        border_width_px=config.border_width_px,
        kind=config.pseudo_targets or "buildings",
    )


def _plan(
    config: TrainConfig,
    sources: Sequence[PreparedSource],
    notes: list[str],
    device: torch.device,
    progress: ProgressCallback,
) -> tuple[TrainConfig, str]:
    """The recipe's settings that depend on the labelled buildings, and the plan in words
    (noted, and reported with an estimate of the time it takes)."""
    buildings = recipe.labelled_buildings(sources)
    config = recipe.resolve(config, buildings)
    plan = f"{config.epochs} x {config.steps_per_epoch} steps, {buildings} labelled buildings"
    plan += ", self-training" if config.self_training else ""
    notes.append(f"{plan} (recipe {config.recipe}, lr {config.lr:g}, L2-SP {config.l2sp_weight:g})")
    total_steps = config.epochs * config.steps_per_epoch
    eta = recipe.estimate_seconds(config, buildings, device.type, reading=False)
    progress(ProgressEvent("plan", 0, total_steps, {"phase": "plan", "plan": plan, "eta_s": eta}))
    return config, plan


def _place_model(model: nn.Module, device: torch.device) -> None:
    """Move the model to ``device`` in training mode; on a CPU with pure ABN (faster there, and
    it runs under bf16 autocast)."""
    if device.type == "cpu":
        to_pure_abn(model)
    model.to(device).train()


def _crops(
    config: TrainConfig, sources: Sequence[PreparedSource], ranks: ddp.Ranks, device: torch.device
) -> tuple[CropDataset, DataLoader]:
    """The random augmented crops of an epoch and their loader (this rank's share of a batch)."""
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
    return dataset, loader


def _starting_weights(
    config: TrainConfig, model: nn.Module, ckpt: dict[str, Any] | None
) -> StateDict | None:
    """The starting model's weights, for the blend after training (``None`` when nothing is
    blended); a resumed run builds them again from ``config.init``."""
    if config.init is None or (config.blend or 1.0) >= 1.0:
        return None
    if ckpt is None:
        return starting_state(model)
    started, _meta, _notes = build_model(
        _band_names(config.sources), config.resolution_m, config.init, config.encoder
    )
    return starting_state(started)


def _blend(
    run: Run,
    start: StateDict | None,
    ranks: ddp.Ranks,
    device: torch.device,
    progress: ProgressCallback,
) -> None:
    """On rank 0, blend the best model with the starting weights once (when asked): after
    training, or when the run is stopped with a best model kept."""
    if start is not None and ranks.main and run.best is not None and not run.blended:
        run.blend_with_start(start, device, progress)


def _after_training(
    config: TrainConfig,
    run: Run,
    start: StateDict | None,
    ranks: ddp.Ranks,
    device: torch.device,
    progress: ProgressCallback,
    cancel: CancelToken,
) -> dict[str, Any] | None:
    """On rank 0, once there is a best model: blend it with the starting model (when asked),
    tune its thresholds on the labelled areas (when asked), then calibrate its confidence
    (:mod:`.calibration`); returns the calibration report."""
    _blend(run, start, ranks, device, progress)
    labelled = any(s.source.labels is not None for s in run.sources)
    if config.tune_thresholds and labelled and ranks.main and run.best is not None:
        run.tune_thresholds(device, progress, cancel)
    if ranks.main and run.best is not None:  # after the thresholds: fitted to the final ones
        return calibration_step(run, device, progress, cancel)
    return None
