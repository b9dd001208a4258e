"""Job results are typed (issue 20): one model per job kind in ``/v1/openapi.json``, built by
the runners, stored as JSON; results stored by older versions (no ``kind``, or a field missing)
still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from ternaus_backend.api.jobs import JobOutcome
from ternaus_backend.api.results import RESULT_MODELS, PredictResult
from ternaus_backend.api.schemas import JobOut
from tests.api.conftest import wait_for

#: A predict result as versions before issue 20 stored it (no ``kind``).
OLD_PREDICT = {
    "out": "/jobs/abc/buildings.gpkg",
    "buildings": 3,
    "width_px": 128,
    "height_px": 96,
    "area_km2": 0.003,
    "resolution_m": 0.5,
    "resampled": False,
    "seconds": 1.5,
    "clipped": 0,
    "stages": {"infer": 1.0},
    "model": "/models/rgb.safetensors",
    "layer": "buildings",
    "warnings": [],
}


def _job(kind: str, result: dict | None) -> JobOut:
    """A finished job with ``result``, as the job manager's snapshot gives it."""
    snapshot = {
        "id": "0123456789ab",
        "kind": kind,
        "status": "succeeded",
        "result": result,
        "work_dir": "/jobs/0123456789ab",
        "created": "2026-01-01T00:00:00Z",
    }
    return JobOut.from_snapshot(snapshot)


def test_openapi_shows_one_result_model_per_job_kind(client) -> None:
    schemas = client.get("/v1/openapi.json").json()["components"]["schemas"]
    for kind, model in RESULT_MODELS.items():
        assert schemas[model.__name__]["properties"]["kind"]["const"] == kind
        assert all(f.description for n, f in model.model_fields.items() if n != "kind"), kind
    members = schemas["JobOut"]["properties"]["result"]["anyOf"]
    union = next(m for m in members if "oneOf" in m)
    assert union["discriminator"]["propertyName"] == "kind"
    refs = {ref["$ref"].rsplit("/", 1)[-1] for ref in union["oneOf"]}
    assert refs == {model.__name__ for model in RESULT_MODELS.values()}


def test_a_result_stored_without_kind_is_read_as_its_model() -> None:
    job = _job("predict", OLD_PREDICT)
    assert isinstance(job.result, PredictResult) and job.result.buildings == 3
    served = job.model_dump(mode="json")["result"]
    assert served == {**OLD_PREDICT, "kind": "predict", "cluster": None, "blocks": None}


@pytest.mark.parametrize("kind", sorted(RESULT_MODELS))
def test_a_stored_result_that_fits_no_model_is_served_as_stored(kind: str) -> None:
    old = {"made_by": "an older backend"}
    assert _job(kind, old).model_dump(mode="json")["result"] == {**old, "kind": kind}
    assert _job(kind, None).result is None


def test_fields_a_result_model_does_not_name_are_kept() -> None:
    result = _job("predict", {**OLD_PREDICT, "later": [1, 2]}).result
    assert isinstance(result, PredictResult) and result.model_dump()["later"] == [1, 2]


def test_a_job_outcome_keeps_its_model_json_ready() -> None:
    model = PredictResult(
        out=Path("/o.gpkg"), buildings=1, area_km2=1.0, seconds=2.0, model=Path("/m")
    )
    outcome = JobOutcome(model, file=Path("/o.gpkg"))
    assert outcome.result["kind"] == "predict" and outcome.result["out"] == "/o.gpkg"
    assert PredictResult.model_validate(outcome.result) == model


def test_a_predict_job_returns_its_model(client, model_file, rgb_raster) -> None:
    body = {"rgb": str(rgb_raster), "model": str(model_file), "options": {"tile_size_px": 64}}
    job = wait_for(client, client.post("/v1/jobs/predict", json=body).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = PredictResult.model_validate(job["result"])
    assert result.kind == "predict" and result.width_px == 128 and result.cluster is None
    assert set(OLD_PREDICT) <= set(job["result"])  # every key of earlier versions is kept


def test_a_cluster_predict_job_returns_its_model(monkeypatch, tmp_path) -> None:
    """The Dask variant fills ``cluster`` and ``blocks``, not the grid's fields."""
    from ternaus_backend.api import runners
    from ternaus_backend.api.jobs import JobContext
    from ternaus_backend.distributed import cluster
    from ternaus_backend.pipeline.options import ExtractOptions
    from ternaus_backend.progress import CancelToken
    from ternaus_backend.settings import Settings

    def extract_on_cluster(rgb, target, scheduler, **kwargs) -> cluster.ClusterResult:
        return cluster.ClusterResult(target, 7, 4, 0, 3.25, 0.5, [1])

    monkeypatch.setattr(cluster, "extract_on_cluster", extract_on_cluster)
    settings = Settings(work_dir=tmp_path, dask_scheduler="local:1")
    request = runners.PredictRequest(rgb=tmp_path / "rgb.tif")
    run = runners._cluster_predict(
        settings, request.rgb, None, Path("/m"), None, ExtractOptions(), request, ["w"]
    )
    context = JobContext("0123456789ab", tmp_path, lambda event: None, CancelToken())
    result = PredictResult.model_validate(run(context).result)
    assert (result.cluster, result.blocks, result.buildings) == ("local:1", 4, 7)
    assert result.width_px is None and result.warnings == ["w"] and result.layer == "buildings"
