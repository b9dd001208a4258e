"""The Processing algorithms of the layer jobs take their options from the backend's models
(``ternaus_backend.evaluation.options``): the same defaults, and ranges inside the backend's."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from ternaus_backend.evaluation.options import (
    ChangesOptions,
    CompareOptions,
    EvaluateOptions,
    WhereToLabelOptions,
)
from ternaus_qgis.processing.changes_algorithm import DetectChangesAlgorithm
from ternaus_qgis.processing.compare_algorithm import CompareWithMapAlgorithm
from ternaus_qgis.processing.evaluate_algorithm import EvaluateBuildingsAlgorithm
from ternaus_qgis.processing.where_to_label_algorithm import WhereToLabelAlgorithm

#: (algorithm, parameter, backend options model, field)
PAIRS = [
    (EvaluateBuildingsAlgorithm, "IOU", EvaluateOptions, "iou_threshold"),
    (CompareWithMapAlgorithm, "IOU", CompareOptions, "iou_threshold"),
    (CompareWithMapAlgorithm, "CELL_M", CompareOptions, "cell_m"),
    (DetectChangesAlgorithm, "IOU", ChangesOptions, "change_iou"),
    (DetectChangesAlgorithm, "MATCH_IOU", ChangesOptions, "match_iou"),
    (WhereToLabelAlgorithm, "CELL_M", WhereToLabelOptions, "cell_m"),
    (WhereToLabelAlgorithm, "TOP", WhereToLabelOptions, "top"),
]


def bounds(model: type[BaseModel], name: str) -> tuple[float, float]:
    """The lowest and highest value the backend takes (open bounds nudged inside)."""
    low, high = float("-inf"), float("inf")
    for item in model.model_fields[name].metadata:
        for key, nudge in (("ge", 0.0), ("gt", 1e-9)):
            if getattr(item, key, None) is not None:
                low = max(low, getattr(item, key) + nudge)
        for key, nudge in (("le", 0.0), ("lt", 1e-9)):
            if getattr(item, key, None) is not None:
                high = min(high, getattr(item, key) - nudge)
    return low, high


@pytest.mark.parametrize(("algorithm", "parameter", "model", "name"), PAIRS)
def test_processing_parameters_match_the_backend_options(
    qgis_app, algorithm, parameter, model, name
) -> None:
    alg = algorithm()
    alg.initAlgorithm()
    definition = alg.parameterDefinition(parameter)
    assert definition is not None, f"{alg.name()} has no {parameter}"
    assert definition.defaultValue() == model.model_fields[name].default
    low, high = bounds(model, name)
    assert low <= definition.minimum() and definition.maximum() <= high, (
        f"{alg.name()} {parameter} allows [{definition.minimum()}, {definition.maximum()}], the "
        f"backend's {model.__name__}.{name} [{low}, {high}]"
    )


def test_every_backend_option_of_these_jobs_is_offered_or_left_to_its_default() -> None:
    offered = {(model, name) for _, _, model, name in PAIRS}
    left = {(EvaluateOptions, "min_area"), (CompareOptions, "min_pairs")}  # the defaults hold
    for model in (EvaluateOptions, CompareOptions, ChangesOptions, WhereToLabelOptions):
        for name in model.model_fields:
            assert (model, name) in offered | left, f"{model.__name__}.{name}: not in Processing"
