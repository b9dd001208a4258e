"""The extraction options are declared once (``ExtractOptions``): every option is a flag of
``ternaus predict`` and a property of the API's predict request, old names still work, internal
fields are offered by neither. (The QGIS side: ``tests/qgis/test_extract_options.py``.)"""

from __future__ import annotations

import argparse
from typing import get_args

import pytest

from ternaus_backend.api.main import create_app
from ternaus_backend.api.schemas import PredictRequest
from ternaus_backend.cli import build_parser
from ternaus_backend.errors import InputError
from ternaus_backend.options import cli_flags, front_door_fields, options_from_args
from ternaus_backend.pipeline.options import Engine, ExtractOptions, Precision
from ternaus_backend.settings import Settings

OPTIONS = front_door_fields(ExtractOptions)
INTERNAL = set(ExtractOptions.model_fields) - set(OPTIONS)

#: The flags ``ternaus predict`` had before they were generated (scripts and users type them).
HISTORIC_FLAGS = {
    "--tile": "tile_size_px",
    "--overlap": "overlap_px",
    "--batch-size": "batch_size",
    "--simplify": "simplify_px",
    "--regularize": "regularize",
    "--threshold": "body_threshold",
    "--min-area": "min_area_px",
    "--native-resolution": "native_resolution",
    "--tta": "tta",
    "--device": "device",
    "--precision": "precision",
    "--compile": "compile",
}


def predict_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["predict"]


def test_every_option_is_documented_and_the_internal_ones_are_known():
    assert INTERNAL == {"block_px", "halo_px"}
    for name, info in OPTIONS.items():
        assert info.title and info.description, f"{name} needs a title and a description"


def test_every_option_is_a_predict_flag_and_the_historic_flags_still_work():
    flags = {
        flag: action.dest for action in predict_parser()._actions for flag in action.option_strings
    }
    for name, info in OPTIONS.items():
        for flag in cli_flags(name, info):
            assert flags.get(flag) == name, f"{flag} ({name}) is not a flag of ternaus predict"
    for flag, name in HISTORIC_FLAGS.items():
        assert flags.get(flag) == name, flag
    assert "halo_px" not in flags.values()
    # --block-px is the side of a cluster block (a flag of its own), not ExtractOptions.block_px
    assert predict_parser().get_default("block_px") == 8192


def test_flags_become_the_options_and_defaults_stay_the_models():
    parser = predict_parser()
    base = ["--rgb", "a.tif", "--out", "b.gpkg"]
    args = parser.parse_args(base)
    assert options_from_args(ExtractOptions, args) == ExtractOptions()
    args = parser.parse_args(
        [*base, "--tile", "256", "--overlap-px", "32", "--threshold", "0.4", "--min-area", "12"]
        + ["--simplify", "0.5", "--regularize", "--tta", "--precision", "float32", "--compile"]
        + ["--device", "cpu", "--batch-size", "2", "--native-resolution", "--engine", "openvino"]
    )
    options = options_from_args(ExtractOptions, args)
    assert options == ExtractOptions(
        tile_size_px=256,
        overlap_px=32,
        body_threshold=0.4,
        min_area_px=12,
        simplify_px=0.5,
        regularize=True,
        tta=True,
        precision="float32",
        compile=True,
        device="cpu",
        batch_size=2,
        native_resolution=True,
        engine="openvino",
    )
    assert options.block_px == ExtractOptions().block_px  # --block-px is the cluster's block
    with pytest.raises(InputError, match="threshold must be less than 1"):
        options_from_args(ExtractOptions, parser.parse_args([*base, "--threshold", "1.5"]))


def test_every_option_is_in_the_openapi_schema_of_the_predict_request(tmp_path):
    settings = Settings(work_dir=tmp_path / "jobs", models_dir=tmp_path / "models")
    schemas = create_app(settings).openapi()["components"]["schemas"]
    properties = schemas["ExtractOptions"]["properties"]
    assert set(properties) == set(OPTIONS)
    for name, info in OPTIONS.items():
        assert properties[name]["description"] == info.description
    assert schemas["PredictRequest"]["properties"]["options"]["$ref"].endswith("/ExtractOptions")


def test_the_api_takes_full_and_short_names_and_refuses_internal_fields():
    request = PredictRequest.model_validate(
        {"rgb": "a.tif", "options": {"tile": 64, "overlap_px": 16, "threshold": 0.3}}
    )
    assert request.options == ExtractOptions(tile_size_px=64, overlap_px=16, body_threshold=0.3)
    assert request.model_dump(mode="json")["options"] == {
        **ExtractOptions().model_dump(mode="json"),
        "tile_size_px": 64,
        "overlap_px": 16,
        "body_threshold": 0.3,
    }
    for bad, message in (
        ({"block_px": 64}, "not an option"),
        ({"tile": 50}, "multiple of 32"),
        ({"batch_size": 0}, "batch size must be 1 or more"),
        ({"tile": 64, "overlap": 64}, "smaller than the tile"),
        ({"colour": "red"}, "Unknown option 'colour'"),
    ):
        with pytest.raises(ValueError, match=message):
            PredictRequest.model_validate({"rgb": "a.tif", "options": bad})


def test_precisions_are_the_engines():
    from ternaus_backend.pipeline.engine import PRECISIONS

    assert get_args(Precision) == PRECISIONS


def test_the_engine_choices_are_the_pipelines():
    from ternaus_backend.pipeline.cpu_engines import ENGINES

    assert get_args(Engine) == ENGINES
