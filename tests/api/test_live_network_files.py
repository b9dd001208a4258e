"""A real ``ternaus serve`` refuses inputs that would reach the network (issue 7, item 11)."""

from __future__ import annotations

from tests.test_network_files import network_vrt, recorder  # noqa: F401  (fixture)


def test_server_refuses_a_vrt_of_network_sources(start_backend, recorder, tmp_path):  # noqa: F811
    vrt = network_vrt(tmp_path / "remote.vrt", f"/vsicurl/{recorder.url}/x.tif")
    labels = tmp_path / "labels.vrt"
    labels.write_text(
        f"<OGRVRTDataSource><OGRVRTLayer name='b'><SrcDataSource>/vsicurl/{recorder.url}/b.geojson"
        "</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>"
    )
    backend = start_backend()
    with backend.client() as http:
        for path, body in (
            ("/v1/jobs/predict", {"rgb": str(vrt)}),
            ("/v1/jobs/predict", {"rgb": f"/vsicurl/{recorder.url}/x.tif"}),
            ("/v1/jobs/evaluate", {"pred": str(labels), "truth": str(labels)}),
            (
                "/v1/jobs/train",
                {"sources": [{"rgb": str(vrt), "labels": str(labels)}], "out": None},
            ),
        ):
            response = http.post(path, json=body)
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert "on the network" in message and "TERNAUS_ALLOW_NETWORK_FILES=1" in message
        assert http.get("/v1/jobs").json() == []
    assert recorder.requests == []
