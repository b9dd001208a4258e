"""The plugin reads job results through ``ternaus_qgis.core.results`` (issue 20): every field it
reads exists in the backend's result model of that job kind, what the backend sends parses, and a
result that lacks a field (an older backend) is refused with a message that says what to do."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from ternaus_backend.api import results as backend
from ternaus_qgis.core import results as plugin
from ternaus_qgis.exceptions import BackendVersionError

#: The plugin's dataclasses of nested results and the backend models they read.
NESTED = {
    plugin.Shift: backend.ShiftOut,
    plugin.LabelCell: backend.CellOut,
    plugin.Epoch: backend.EpochOut,
}
SHIFT = backend.ShiftOut(dx_m=2.0, dy_m=-1.0, pairs=12)
CELL = backend.CellOut(
    rank=1,
    score=0.9,
    near_threshold=0.4,
    flip_disagreement=0.3,
    low_confidence_share=0.2,
    low_confidence_buildings=2,
    buildings=5,
    covered=1.0,
    top=True,
    bounds=[0.0, 0.0, 50.0, 50.0],
)
#: One result of each kind, as the backend builds it.
SAMPLES: dict[str, backend.BaseModel] = {
    "predict": backend.PredictResult(
        out="/o.gpkg", buildings=3, area_km2=0.1, seconds=2.0, model="/m.safetensors"
    ),
    "evaluate": backend.EvaluateResult(
        out="/e.gpkg",
        layers=["result", "missed"],
        tp=8,
        fp=1,
        fn=2,
        precision=0.889,
        recall=0.8,
        f1=0.842,
        results_scored=9,
        references_scored=10,
        pred="/p.gpkg",
        truth="/t.gpkg",
        iou_threshold=0.5,
    ),
    "compare": backend.CompareResult(
        out="/c.gpkg",
        shift=SHIFT,
        metric_crs="EPSG:32636",
        results_scored=20,
        references_scored=25,
        matched=15,
        unmapped=5,
        unseen=10,
        offset=SHIFT,
        cells=4,
        iou_threshold=0.3,
        cell_m=250.0,
        pred="/p.gpkg",
        reference="/r.gpkg",
    ),
    "changes": backend.ChangesResult(
        out="/d.gpkg",
        shift=SHIFT,
        metric_crs=None,
        before=10,
        after=12,
        new=3,
        demolished=1,
        changed=2,
        unchanged=7,
        match_iou=0.3,
        change_iou=0.7,
        before_path="/b.gpkg",
        after_path="/a.gpkg",
    ),
    "where_to_label": backend.WhereToLabelResult(
        out="/w.gpkg",
        cells=36,
        cell_m=50.0,
        cell_px=100,
        buildings=9,
        top=[CELL],
        seconds=1.0,
        rgb="/rgb.tif",
        model="/m.safetensors",
    ),
    "train": backend.TrainResult(
        status="completed",
        model_path="/m.safetensors",
        checkpoint_path="/m.safetensors.ckpt.pt",
        epochs_completed=1,
        best_epoch=1,
        best_val_f1=0.5,
        history=[backend.EpochOut(epoch=1, train_loss=0.7, val_f1=0.5, best=True)],
    ),
}


def _job(kind: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """A finished job's JSON as ``GET /v1/jobs/{id}`` answers it."""
    return {"id": "0123456789ab", "kind": kind, "status": "succeeded", "result": result}


def _sent(kind: str) -> dict[str, Any]:
    return SAMPLES[kind].model_dump(mode="json")


def test_each_job_kind_has_a_dataclass_and_a_backend_model() -> None:
    assert set(plugin.RESULT_TYPES) == set(backend.RESULT_MODELS) == set(SAMPLES)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(plugin.RESULT_TYPES[k], backend.RESULT_MODELS[k]) for k in sorted(plugin.RESULT_TYPES)]
    + list(NESTED.items()),
    ids=lambda cls: cls.__name__,
)
def test_every_field_the_plugin_reads_is_in_the_backend_model(ours, theirs) -> None:
    read = {item.name for item in fields(ours)} - {"raw"}
    assert read - set(theirs.model_fields) == set(), f"{ours.__name__} reads what is not sent"


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_what_the_backend_sends_parses(kind: str) -> None:
    sent = _sent(kind)
    parsed = plugin.parse_result(_job(kind, sent), plugin.RESULT_TYPES[kind])
    assert parsed.raw == sent
    scalars = {k: v for k, v in vars(parsed).items() if isinstance(v, (int, float, str))}
    assert scalars == {k: sent[k] for k in scalars}


def test_nested_results_are_dataclasses() -> None:
    compare = plugin.parse_result(_job("compare", _sent("compare")), plugin.CompareResult)
    assert compare.offset == plugin.Shift(2.0, -1.0, 12)
    cells = plugin.parse_result(
        _job("where_to_label", _sent("where_to_label")), plugin.WhereToLabelResult
    )
    assert cells.top == [plugin.LabelCell(1, 0.4, 0.3, 2, 5)]
    train = plugin.parse_result(_job("train", _sent("train")), plugin.TrainResult)
    assert train.history == [plugin.Epoch(1, 0.7, 0.5, None, True)]
    assert train.calibration is None


def test_a_result_missing_a_field_is_refused_with_what_to_do() -> None:
    sent = _sent("predict")
    del sent["buildings"]
    with pytest.raises(plugin.BackendResultError) as caught:
        plugin.parse_result(_job("predict", sent), plugin.PredictResult)
    message = caught.value.message
    assert "lacks 'buildings'" in message and "predict job's result" in message
    assert "update the backend (Install backend…" in message
    assert isinstance(caught.value, BackendVersionError)


def test_a_nested_field_missing_or_of_another_type_is_refused() -> None:
    sent = _sent("compare")
    del sent["offset"]["pairs"]
    with pytest.raises(plugin.BackendResultError, match="lacks 'pairs'.*update the backend"):
        plugin.parse_result(_job("compare", sent), plugin.CompareResult)
    sent = {**_sent("changes"), "new": "3"}
    with pytest.raises(plugin.BackendResultError, match="'new' as str, not int"):
        plugin.parse_result(_job("changes", sent), plugin.ChangesResult)


def test_a_job_without_result_is_refused() -> None:
    with pytest.raises(plugin.BackendResultError, match="no result for job 0123456789ab"):
        plugin.parse_result(_job("train", None), plugin.TrainResult)


def test_an_offset_of_none_and_fields_not_read_are_fine() -> None:
    sent = {**_sent("compare"), "offset": None, "later": 1}
    parsed = plugin.parse_result(_job("compare", sent), plugin.CompareResult)
    assert parsed.offset is None and parsed.raw["later"] == 1


def test_an_epoch_without_its_loss_is_drawn_at_zero() -> None:
    from dataclasses import asdict

    from ternaus_qgis.core.training import EpochPoint

    point = EpochPoint.from_dict(asdict(plugin.Epoch(epoch=2, train_loss=None, val_f1=0.4)))
    assert (point.epoch, point.loss, point.val_f1) == (2, 0.0, 0.4)
