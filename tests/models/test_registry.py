"""The encoder registry and metadata helpers."""

from __future__ import annotations

import pytest
import torch

from ternaus_backend.errors import ModelError
from ternaus_backend.models import ENCODERS, create_model, create_model_from_metadata
from ternaus_backend.models.metadata import ModelMetadata, spacenet2_metadata
from ternaus_backend.models.registry import check_metadata_matches, metadata_for
from ternaus_backend.models.ternausnetv2 import TernausNetV2
from ternaus_backend.pipeline.engine import SEAM_GUARD_PX, plan_device


def test_encoders_registered() -> None:
    assert {"wrn38", "resnet_light", "resnet_light_deep"} <= set(ENCODERS)


def test_unknown_encoder_lists_the_options() -> None:
    with pytest.raises(ModelError) as info:
        create_model("resnet9000")
    assert "resnet9000" in info.value.message
    for name in ENCODERS:
        assert name in info.value.message


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_sizes_are_refused(bad: int) -> None:
    with pytest.raises(ModelError, match="in_channels"):
        create_model("resnet_light", in_channels=bad)


def test_defaults_and_attributes() -> None:
    with torch.device("meta"):
        wrn = create_model()
        light = create_model("resnet_light", in_channels=3, num_filters=8)
    assert isinstance(wrn, TernausNetV2)
    assert (wrn.encoder_name, wrn.in_channels, wrn.num_classes, wrn.num_filters) == (
        "wrn38",
        11,
        2,
        32,
    )
    assert (light.encoder_name, light.in_channels, light.num_filters) == ("resnet_light", 3, 8)


@pytest.mark.parametrize("in_channels", [3, 4, 11])
def test_metadata_for_round_trip(in_channels: int) -> None:
    with torch.device("meta"):
        model = create_model("resnet_light", in_channels=in_channels)
        meta = metadata_for(model, resolution_m=0.5)
        rebuilt = create_model_from_metadata(meta)
    check_metadata_matches(model, meta)
    assert meta.resolution_m == 0.5 and len(meta.band_names) == in_channels
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]


def test_spacenet2_metadata_builds_the_reference_network() -> None:
    with torch.device("meta"):
        model = create_model_from_metadata(spacenet2_metadata())
    assert isinstance(model, TernausNetV2) and model.in_channels == 11
    check_metadata_matches(model, spacenet2_metadata())


def test_mismatched_metadata_is_refused() -> None:
    with torch.device("meta"):
        model = create_model("resnet_light", in_channels=3)
    with pytest.raises(ModelError, match="encoder='wrn38'"):
        check_metadata_matches(model, ModelMetadata(in_channels=3, num_filters=16))
    with pytest.raises(ModelError, match="band_names has 11"):
        check_metadata_matches(
            model, ModelMetadata(encoder="resnet_light", in_channels=3, num_filters=16)
        )


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_keeps_the_contract(name: str) -> None:
    """What the pipeline and training rely on, for each registered encoder."""
    entry = ENCODERS[name]
    torch.manual_seed(0)
    model = create_model(name, in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 2, 64, 96) and torch.isfinite(out).all()
    assert (model.encoder_name, model.in_channels, model.num_classes) == (name, 3, 2)
    assert model.num_filters == entry.default_num_filters
    meta = metadata_for(model)
    check_metadata_matches(create_model_from_metadata(meta), meta)
    assert entry.activation_bytes_per_px > 0
    assert entry.seam_guard_px >= SEAM_GUARD_PX and entry.seam_guard_px % 32 == 0
    assert plan_device(torch.device("cpu"), name, 512).seam_guard_px == entry.seam_guard_px
    assert entry.grows_from is None or entry.grows_from in ENCODERS
