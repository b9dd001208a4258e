"""Building the network to train: from scratch, or fine-tuned from any loadable model file.

Fine-tuning keeps the init model's encoder, decoder width, thresholds and tile size. When the
training rasters have other bands than the init model (e.g. the authors' 11-band RGB + MS
checkpoint fine-tuned on RGB imagery) the first convolution is adapted: filters of bands present
in both (matched by name, e.g. red, green, blue) are kept, new bands start at zero (so the network
initially behaves exactly as on the shared bands), and the normalisation is cut or extended to the
new bands (the models package's ``adapt_first_layer``; :func:`adapt_first_conv` here when the
band lists share no common prefix and bands must be matched by name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ternaus_backend.errors import InputError, ModelError
from ternaus_backend.models.metadata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BandScaling,
    ModelMetadata,
    Normalization,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ENCODER",
    "scratch_metadata",
    "adapt_normalization",
    "with_scaling",
    "adapt_first_conv",
    "adapt_bands",
    "build_model",
    "first_conv",
]

DEFAULT_ENCODER = "resnet_light"
#: Scaling of the [0, 1] range for multispectral bands of new models: mean 0.5, std 0.25.
_MS_MEAN, _MS_STD = 0.5, 0.25


def scratch_metadata(
    encoder: str, band_names: Sequence[str], num_filters: int, resolution_m: float
) -> ModelMetadata:
    """Metadata of a new model: 8-bit rasters / 255, others a robust 1-99 % stretch per band;
    ImageNet mean/std for RGB."""
    extra = len(band_names) - 3
    norm = Normalization(
        rgb=BandScaling(method="auto", low=1.0, high=99.0),
        ms=BandScaling(method="auto", low=1.0, high=99.0) if extra > 0 else None,
        mean=list(IMAGENET_MEAN) + [_MS_MEAN] * extra,
        std=list(IMAGENET_STD) + [_MS_STD] * extra,
    )
    return ModelMetadata(
        name=f"ternausnetv2-{encoder}",
        encoder=encoder,
        in_channels=len(band_names),
        num_filters=num_filters,
        band_names=list(band_names),
        normalization=norm,
        resolution_m=resolution_m,
    )


def with_scaling(norm: Normalization, method: str) -> Normalization:
    """``norm`` with the scaling ``method`` (auto or percentile) for RGB and multispectral bands."""
    rgb = norm.rgb.model_copy(update={"method": method})
    ms = norm.ms.model_copy(update={"method": method}) if norm.ms is not None else None
    return norm.model_copy(update={"rgb": rgb, "ms": ms})


def _band_map(old: Sequence[str], new: Sequence[str]) -> list[int | None]:
    """For each new band, the index of the same-named old band (first match), else None."""
    return [list(old).index(name) if name in old else None for name in new]


def adapt_normalization(
    norm: Normalization, old_bands: Sequence[str], new_bands: Sequence[str]
) -> Normalization:
    """Normalisation for ``new_bands``: shared RGB keeps its terms, MS bands keep theirs by name."""
    mean, std = [], []
    old_ms = list(old_bands[3:])
    for i, name in enumerate(new_bands):
        if i < 3:
            j = i if len(norm.mean) > i else None
        else:
            j = 3 + old_ms.index(name) if name in old_ms else None
        if j is not None and j < len(norm.mean):
            mean.append(norm.mean[j])
            std.append(norm.std[j])
        else:
            mean.append(_MS_MEAN)
            std.append(_MS_STD)
    ms = None
    if len(new_bands) > 3:
        ms = norm.ms or BandScaling(method="percentile", low=1.0, high=99.0)
    return Normalization(rgb=norm.rgb, ms=ms, mean=mean, std=std)


def first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent module, attribute name, conv) of the first convolution that sees the input."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module
    raise ModelError("The model has no convolution to adapt to the new bands.")


def adapt_first_conv(model: nn.Module, old_bands: Sequence[str], new_bands: Sequence[str]) -> str:
    """Replace the first convolution for ``new_bands``; returns a one-line account of how.

    The first three (RGB) input channels map onto the old RGB filters by position; further bands
    map by name onto the old multispectral filters; unmatched bands start with zero filters.
    """
    parent, attr, conv = first_conv(model)
    mapping = [i if i < 3 else None for i in range(min(3, len(new_bands)))]
    ms_map = _band_map(list(old_bands[3:]), list(new_bands[3:]))
    mapping += [None if j is None else 3 + j for j in ms_map]
    new = nn.Conv2d(
        len(new_bands),
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        for i, j in enumerate(mapping):
            if j is not None and j < conv.in_channels:
                new.weight[:, i] = conv.weight[:, j]
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)
    if hasattr(model, "in_channels"):
        model.in_channels = len(new_bands)
    kept = [new_bands[i] for i, j in enumerate(mapping) if j is not None]
    zeroed = [new_bands[i] for i, j in enumerate(mapping) if j is None]
    dropped = [b for k, b in enumerate(old_bands) if k not in {j for j in mapping if j is not None}]
    return (
        f"first layer adapted from {len(old_bands)} to {len(new_bands)} bands: kept filters of "
        f"{', '.join(kept) or 'none'}"
        + (f"; zero-initialised {', '.join(zeroed)}" if zeroed else "")
        + (f"; dropped {', '.join(dropped)}" if dropped else "")
    )


def adapt_bands(model: nn.Module, old_bands: Sequence[str], new_bands: Sequence[str]) -> str:
    """Adapt the first layer from ``old_bands`` to ``new_bands``; returns how, in one line.

    When one band list starts with the other (11 -> RGB, RGB -> RGB + MS) the models package's
    ``adapt_first_layer`` does it (shared bands kept, new ones zero); otherwise bands are matched by
    name (:func:`adapt_first_conv`).
    """
    old, new = list(old_bands), list(new_bands)
    n = min(len(old), len(new))
    if old[:n] != new[:n]:
        return adapt_first_conv(model, old, new)
    from ternaus_backend.models import adapt_first_layer

    adapt_first_layer(model, len(new), mode="zeros")
    return (
        f"first layer adapted from {len(old)} to {len(new)} bands: kept filters of "
        f"{', '.join(new[:n])}"
        + (f"; zero-initialised {', '.join(new[n:])}" if new[n:] else "")
        + (f"; dropped {', '.join(old[n:])}" if old[n:] else "")
    )


def _grown(model: nn.Module, meta: ModelMetadata, encoder: str) -> tuple[nn.Module, str]:
    """The ``encoder`` network grown from ``model`` (same output), and a note saying so."""
    from ternaus_backend.models.adapt import grow_deeper
    from ternaus_backend.models.registry import ENCODERS, create_model, encoder_entry

    entry = encoder_entry(encoder)
    if entry is None or entry.grows_from != meta.encoder:
        growable = [(e.grows_from, name) for name, e in ENCODERS.items() if e.grows_from]
        raise InputError(
            f"--encoder {encoder} does not match the init model's encoder {meta.encoder}; leave "
            "out --encoder when fine-tuning (the encoder comes from the init model), or grow "
            + ", ".join(f"{small} into {deep}" for small, deep in growable)
            + "."
        )
    deeper = create_model(encoder, meta.in_channels, meta.num_classes, meta.num_filters)
    new_blocks = grow_deeper(deeper, model.state_dict())
    deeper.metadata = model.metadata
    return deeper, (
        f"grew {meta.encoder} into {encoder}: {len(new_blocks)} new residual blocks "
        "(starting as identities)"
    )


def build_model(
    band_names: Sequence[str],
    resolution_m: float | None,
    init: Path | None = None,
    encoder: str | None = None,
) -> tuple[nn.Module, ModelMetadata, list[str]]:
    """The network to train, its metadata and notes on how it was made (for logs, provenance).

    ``resolution_m``: the ground resolution the model works at; ``None`` keeps the init model's
    (a new model then gets 0, to be set by the caller).
    """
    from ternaus_backend.models.model_file import load_model
    from ternaus_backend.models.registry import create_model

    notes: list[str] = []
    if init is None:
        name = encoder or DEFAULT_ENCODER
        model = create_model(name, in_channels=len(band_names))
        meta = scratch_metadata(
            name, band_names, int(getattr(model, "num_filters", 32)), resolution_m or 0.0
        )
        notes.append(f"new {name} model with {len(band_names)} input bands")
        return model, meta, notes

    model = load_model(init, device="cpu")
    meta: ModelMetadata = model.metadata.model_copy(deep=True)
    notes.append(f"fine-tuning {Path(init).name} ({meta.encoder}, {meta.in_channels} bands)")
    if encoder is not None and encoder != meta.encoder:
        model, note = _grown(model, meta, encoder)
        meta.name = meta.name.replace(meta.encoder, encoder)
        meta.encoder = encoder
        notes.append(note)
    if list(meta.band_names) != list(band_names):
        if len(band_names) < 3:
            raise InputError("Training rasters need at least the 3 RGB bands.")
        if meta.in_channels == len(band_names):
            note = (
                f"band names differ ({', '.join(meta.band_names)} -> {', '.join(band_names)}); "
                "same band count, filters kept by position"
            )
        else:
            note = adapt_bands(model, meta.band_names, band_names)
            meta.normalization = adapt_normalization(
                meta.normalization, meta.band_names, band_names
            )
        notes.append(note)
        log.info(note)
        meta.band_names = list(band_names)
        meta.in_channels = len(band_names)
    if resolution_m is not None:
        meta.resolution_m = resolution_m
    model.train()
    return model, meta, notes
