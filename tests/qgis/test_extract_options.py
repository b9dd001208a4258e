"""The plugin's extraction options (``ExtractionOptions``) are the backend's (``ExtractOptions``):
the same names, defaults and ranges; each is an advanced parameter of
``ternaus:extract_buildings``; what the dock and Processing send is a valid predict request."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingParameterDefinition,
    QgsRectangle,
)

from ternaus_backend.api.schemas import PredictRequest
from ternaus_backend.options import front_door_fields
from ternaus_backend.pipeline.options import ExtractOptions
from ternaus_qgis.core.extract_options import ExtractionOptions, option_fields
from ternaus_qgis.core.extraction import ExtractionRequest, build_payload
from ternaus_qgis.core.raster_inputs import RasterInput
from ternaus_qgis.processing.common import options_from_parameters, parameter_name

BACKEND = front_door_fields(ExtractOptions)
KINDS = {int: "int", float: "float", bool: "bool", str: "choice"}


def _value_type(annotation) -> type:
    """int, float, bool or str (a Literal) of an annotation, without ``None``."""
    if get_origin(annotation) is Literal:
        return str
    args = [t for t in get_args(annotation) if t is not type(None)]
    return _value_type(args[0]) if args else annotation


def _constraint(info, name: str):
    for item in info.metadata:
        if getattr(item, name, None) is not None:
            return getattr(item, name)
    return None


def test_the_plugin_declares_the_backends_options_in_the_same_order():
    assert [f.name for f in fields(ExtractionOptions)] == list(BACKEND)


@pytest.mark.parametrize("name,default,spec", option_fields(ExtractionOptions))
def test_each_option_has_the_backends_default_type_and_range(name, default, spec):
    info = BACKEND[name]
    assert default == info.default
    assert spec.kind == KINDS[_value_type(info.annotation)]
    ge, gt = _constraint(info, "ge"), _constraint(info, "gt")
    le, lt = _constraint(info, "le"), _constraint(info, "lt")
    if spec.minimum is not None or ge is not None or gt is not None:
        assert spec.minimum is not None
        assert (ge is None or spec.minimum >= ge) and (gt is None or spec.minimum > gt)
    if spec.maximum is not None or le is not None or lt is not None:
        assert spec.maximum is not None
        assert (le is None or spec.maximum <= le) and (lt is None or spec.maximum < lt)
    if spec.kind == "choice":
        assert spec.choices[0][1] is None  # the first choice: the backend's
        for _, value in spec.choices[1:]:
            ExtractOptions(**{name: value})  # each offered value is valid


def test_every_option_is_an_advanced_processing_parameter(qgis_app):
    from ternaus_qgis.processing.extract_algorithm import ExtractBuildingsAlgorithm

    algorithm = ExtractBuildingsAlgorithm()
    algorithm.initAlgorithm({})
    for name in BACKEND:
        parameter = algorithm.parameterDefinition(parameter_name(name))
        assert parameter is not None, f"{name} is not a parameter of ternaus:extract_buildings"
        assert parameter.flags() & QgsProcessingParameterDefinition.FlagAdvanced
        assert parameter.description() and parameter.help()
    # the parameters the algorithm had before keep their names
    for name in ("RGB", "MS", "EXTENT", "MODEL", "RESOLUTION", "OUTPUT"):
        assert algorithm.parameterDefinition(name) is not None


def test_processing_parameters_become_the_options(qgis_app):
    from ternaus_qgis.processing.extract_algorithm import ExtractBuildingsAlgorithm

    algorithm = ExtractBuildingsAlgorithm()
    algorithm.initAlgorithm({})
    context = QgsProcessingContext()
    read = options_from_parameters(algorithm, ExtractionOptions, {}, context)
    assert read == ExtractionOptions()  # nothing set: the backend's defaults
    parameters = {
        "TILE_SIZE_PX": 256,
        "OVERLAP_PX": 0,
        "BODY_THRESHOLD": 0.4,
        "MIN_AREA_PX": 12,
        "SIMPLIFY_PX": 0.5,
        "REGULARIZE": True,
        "TTA": True,
        "COMPILE": False,
        "DEVICE": 1,
        "PRECISION": 2,
        "BATCH_SIZE": None,
    }
    read = options_from_parameters(algorithm, ExtractionOptions, parameters, context)
    assert read == ExtractionOptions(
        tile_size_px=256,
        overlap_px=0,
        body_threshold=0.4,
        min_area_px=12,
        simplify_px=0.5,
        regularize=True,
        tta=True,
        device="cpu",
        precision="bfloat16",
    )


def test_the_payload_is_a_valid_predict_request_with_the_same_options(qgis_app):
    crs = QgsCoordinateReferenceSystem("EPSG:32723")
    rgb = RasterInput("rgb", "RGB", 3, crs, QgsRectangle(0, 0, 10, 10), 0.5, 0.5, Path("a.tif"))
    options = ExtractionOptions(tile_size_px=512, body_threshold=0.55, device="cuda")
    request = ExtractionRequest(
        rgb=rgb, extent=None, extent_crs=crs, out_path=Path("/tmp/o.gpkg"), options=options
    )
    payload = build_payload(request, Path("a.tif"), None)
    assert payload["options"] == {k: v for k, v in vars(options).items() if v is not None}
    sent = PredictRequest.model_validate(payload).options
    assert sent == ExtractOptions(tile_size_px=512, body_threshold=0.55, device="cuda")
    default = build_payload(
        ExtractionRequest(rgb=rgb, extent=None, extent_crs=crs, out_path=Path("/tmp/o.gpkg")),
        Path("a.tif"),
        None,
    )
    assert PredictRequest.model_validate(default).options == ExtractOptions()
