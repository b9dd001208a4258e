"""Building networks by encoder name: ``create_model("wrn38")``, ``create_model("resnet_light")``.

Every network is the TernausNetV2 two-head decoder behind a registered encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ternaus_backend.errors import ModelError
from ternaus_backend.models.decoder import TwoHeadUNet
from ternaus_backend.models.light import RESNET_LIGHT_DEEP, LightTernausNet
from ternaus_backend.models.metadata import (
    MS_BANDS,
    RGB_BANDS,
    ModelMetadata,
    Normalization,
    spacenet2_metadata,
)
from ternaus_backend.models.ternausnetv2 import TernausNetV2

#: Overlap between extraction windows for encoders that set none (see ``seam_guard_px``).
SEAM_GUARD_PX = 128


@dataclass(frozen=True)
class EncoderEntry:
    """Everything the backend knows of one encoder, in one place.

    ``build``: its two-head network from (in_channels, num_classes, num_filters);
    ``default_num_filters``: the decoder width when none is asked; ``activation_bytes_per_px``:
    rough inference memory per window pixel (sizes GPU batches); ``seam_guard_px``: the overlap
    extraction windows need so the network's border effects stay out of the kept part (encoders
    that see further need more); ``grows_from``: the shallower encoder whose trained model it can
    grow from, function-preserving (``--init`` with ``--encoder``).
    """

    build: Callable[[int, int, int], TwoHeadUNet]
    default_num_filters: int
    description: str
    activation_bytes_per_px: int = 2048
    seam_guard_px: int = SEAM_GUARD_PX
    grows_from: str | None = None


ENCODERS: dict[str, EncoderEntry] = {
    "wrn38": EncoderEntry(
        build=lambda in_ch, classes, nf: TernausNetV2(classes, nf, in_ch),
        default_num_filters=32,
        description="WiderResNet-38 with In-Place ABN: the authors' TernausNetV2 (67 M parameters)",
        activation_bytes_per_px=4096,
    ),
    "resnet_light": EncoderEntry(
        build=lambda in_ch, classes, nf: LightTernausNet(classes, nf, in_ch),
        default_num_filters=16,
        description="small residual encoder for CPUs (3.1 M parameters, ~14x faster than wrn38)",
        activation_bytes_per_px=768,
    ),
    "resnet_light_deep": EncoderEntry(
        build=lambda in_ch, classes, nf: LightTernausNet(
            classes, nf, in_ch, encoder_name="resnet_light_deep", spec=RESNET_LIGHT_DEEP
        ),
        default_num_filters=16,
        description="resnet_light with 4 more residual blocks at 1/8 and 1/16 resolution (6.0 M "
        "parameters, ~12x faster than wrn38); grows from a resnet_light model (--init)",
        # its extra blocks at 1/8 and 1/16 see further: the seam test gave per-building IoU
        # 0.84 at 128 and 192 px of overlap, 0.95 at 256 px
        seam_guard_px=256,
        grows_from="resnet_light",
    ),
}


def encoder_entry(encoder: str) -> EncoderEntry | None:
    """The registry entry of ``encoder`` (``None`` for a name it does not hold)."""
    return ENCODERS.get(encoder)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")


def create_model(
    encoder: str = "wrn38",
    in_channels: int = 11,
    num_classes: int = 2,
    num_filters: int | None = None,
) -> nn.Module:
    """A freshly initialised TernausNetV2-style network with the named encoder.

    ``num_filters`` (decoder width nf) defaults to the encoder's own default. The network has
    attributes ``encoder_name``, ``in_channels``, ``num_classes`` and ``num_filters``.
    """
    entry = ENCODERS.get(encoder)
    if entry is None:
        options = ", ".join(sorted(ENCODERS))
        raise ModelError(f"unknown encoder {encoder!r}: choose one of {options}")
    num_filters = entry.default_num_filters if num_filters is None else num_filters
    for name, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("num_filters", num_filters),
    ):
        _check_positive(name, value)
    return entry.build(in_channels, num_classes, num_filters)


def create_model_from_metadata(meta: ModelMetadata) -> nn.Module:
    """The (untrained) network that ``meta`` describes."""
    return create_model(meta.encoder, meta.in_channels, meta.num_classes, meta.num_filters)


def metadata_for(model: nn.Module, **overrides) -> ModelMetadata:
    """Metadata matching ``model``'s architecture; everything else from ``overrides`` or defaults.

    Band layout defaults: 3 bands = RGB with ImageNet normalisation; 11 bands = the SpaceNet-2
    RGB + 8 MUL layout of :func:`spacenet2_metadata`; other counts = ``band1``.. with mean 0, std 1.
    """
    bands = model.in_channels
    fields: dict = dict(
        name=f"ternausnetv2-{model.encoder_name}",
        encoder=model.encoder_name,
        in_channels=bands,
        num_classes=model.num_classes,
        num_filters=model.num_filters,
    )
    if bands == len(RGB_BANDS):
        fields["band_names"] = list(RGB_BANDS)
    elif bands == len(RGB_BANDS) + len(MS_BANDS):
        fields["band_names"] = list(RGB_BANDS + MS_BANDS)
        fields["normalization"] = spacenet2_metadata().normalization
    else:
        fields["band_names"] = [f"band{index + 1}" for index in range(bands)]
        fields["normalization"] = Normalization(mean=[0.0] * bands, std=[1.0] * bands)
    fields.update(overrides)
    return ModelMetadata(**fields)


def check_metadata_matches(model: nn.Module, meta: ModelMetadata) -> None:
    """Raise :class:`ModelError` where ``meta`` does not describe ``model``'s architecture."""
    expected = {
        "encoder": getattr(model, "encoder_name", None),
        "in_channels": getattr(model, "in_channels", None),
        "num_classes": getattr(model, "num_classes", None),
        "num_filters": getattr(model, "num_filters", None),
    }
    wrong = [
        f"{field}={getattr(meta, field)!r} (network: {value!r})"
        for field, value in expected.items()
        if value is not None and getattr(meta, field) != value
    ]
    if wrong:
        raise ModelError(
            "the metadata does not describe this network: " + ", ".join(wrong),
            details="build the metadata with ternaus_backend.models.registry.metadata_for(model)",
        )
    norm = meta.normalization
    counts = {
        "band_names": len(meta.band_names),
        "normalization.mean": len(norm.mean),
        "normalization.std": len(norm.std),
    }
    wrong = [f"{field} has {count}" for field, count in counts.items() if count != meta.in_channels]
    if wrong:
        raise ModelError(
            f"the metadata is inconsistent for a {meta.in_channels}-band network: "
            + ", ".join(wrong),
            details="give one band name, mean and std per input band",
        )
