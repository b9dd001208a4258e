"""Compare and changes jobs through the real app, on Kampala's real buildings edited by known rules
(tests/evaluation/edited_layers.py says how)."""

from __future__ import annotations

import fiona
import pytest

from tests.api.conftest import wait_for
from tests.evaluation.edited_layers import map_and_result, second_date


def test_compare_job_finds_the_gaps_and_the_offset(client, tmp_path):
    """The result: the map moved 2.0 m east and 1.0 m north, 10 buildings deleted, 5 added."""
    case = map_and_result(tmp_path)
    body = {"pred": str(case.result), "reference": str(case.reference), "iou_threshold": 0.3}
    response = client.post("/v1/jobs/compare", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    job = wait_for(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "compare"
    result = job["result"]
    assert (result["unmapped"], result["unseen"], result["matched"]) == (5, 10, 196)
    assert result["offset"]["dx_m"] == pytest.approx(2.0, abs=0.2)
    assert result["offset"]["dy_m"] == pytest.approx(1.0, abs=0.2)
    assert result["layers"] == ["unmapped", "unseen", "offsets"]
    download = tmp_path / "gaps.gpkg"
    download.write_bytes(client.get(job["result_url"]).content)
    with fiona.open(download, layer="unmapped") as layer:
        assert [f.properties["id"] for f in layer] == case.added_ids
    with fiona.open(download, layer="offsets") as layer:
        rows = [dict(f.properties) for f in layer]
    assert rows[0]["scope"] == "overall" and rows[0]["pairs"] == 196
    assert all(r["pairs"] >= 3 for r in rows)


def test_changes_job_counts_and_writes_where_asked(client, tmp_path):
    """The later date: 8 buildings removed, 6 added, 4 enlarged 40 % in width and length."""
    case = second_date(tmp_path)
    out = tmp_path / "changes.gpkg"
    body = {"before": str(case.before), "after": str(case.after), "out": str(out)}
    job = wait_for(client, client.post("/v1/jobs/changes", json=body).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    counts = [result[k] for k in ("new", "demolished", "changed", "unchanged")]
    assert counts == [6, 8, 4, 194]
    assert result["out"] == str(out) and sorted(fiona.listlayers(out)) == [
        "changed",
        "demolished",
        "new",
    ]
    listed = client.get("/v1/jobs", params={"kind": "changes"}).json()
    assert [j["id"] for j in listed] == [job["id"]]


def test_bad_requests_are_refused_with_what_to_do(client, tmp_path):
    case = second_date(tmp_path)
    missing = client.post(
        "/v1/jobs/changes", json={"before": str(case.before), "after": str(tmp_path / "no.gpkg")}
    )
    assert missing.status_code == 400 and "later layer" in missing.json()["error"]["message"]
    order = client.post(
        "/v1/jobs/changes",
        json={
            "before": str(case.before),
            "after": str(case.after),
            "match_iou": 0.5,
            "change_iou": 0.3,
        },
    )
    assert order.status_code == 400 and "must not be below" in order.json()["error"]["message"]
    wrong = client.post(
        "/v1/jobs/compare",
        json={"pred": str(case.after), "reference": str(case.before), "out": str(tmp_path / "x")},
    )
    assert wrong.status_code == 400 and ".gpkg" in wrong.json()["error"]["message"]
    assert client.post("/v1/jobs/compare", json={"pred": str(case.after)}).status_code == 422
