"""Inputs that would reach the network are refused unless allowed (issue 7, item 11).

A tiny local HTTP server records every request: a VRT whose sources are /vsicurl/ URLs on it
must be refused by predict (CLI and a real ``ternaus serve``) without one request reaching it.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ternaus_backend import cli
from ternaus_backend.errors import InputError
from ternaus_backend.network_files import check_local_file, network_reference
from tests.helpers import rectangles_image, write_raster


class RecordingServer:
    """An HTTP server on 127.0.0.1 that answers 404 and remembers every path asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.end_headers()

            do_HEAD = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


def network_vrt(path: Path, source: str, size: int = 64) -> Path:
    """A 3-band VRT (georeferenced, EPSG:32723) whose bands read ``source``."""
    bands = "".join(
        f"""<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>
  <SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>
  <SourceProperties RasterXSize="{size}" RasterYSize="{size}" DataType="Byte"
    BlockXSize="{size}" BlockYSize="{size}"/>
  <SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>
  <DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>
</SimpleSource></VRTRasterBand>
"""
        for b in (1, 2, 3)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32723</SRS>'
        "<GeoTransform>500000, 0.5, 0, 7450000, 0, -0.5</GeoTransform>"
        f'<Metadata><MDI key="source">https://example.org/attribution</MDI></Metadata>\n'
        f"{bands}</VRTDataset>\n"
    )
    return path


def test_network_references_are_found_in_paths_and_vrts(tmp_path, recorder):
    url = f"/vsicurl/{recorder.url}/x.tif"
    assert network_reference(url) == url
    assert network_reference("/vsis3/bucket/x.tif") and network_reference("https://a/b.tif")
    assert network_reference("/vsicurl/http:/127.0.0.1/x.tif")  # as pathlib collapses //
    remote = network_vrt(tmp_path / "remote.vrt", url)
    assert network_reference(remote) == url
    nested = tmp_path / "nested.vrt"
    nested.write_text(remote.read_text().replace(url, "remote.vrt").replace('"0"', '"1"', 3))
    assert network_reference(nested) == url
    local = write_raster(tmp_path / "rgb.tif", rectangles_image(8, 8, []))
    # a VRT of local files whose metadata holds a URL reads nothing over the network
    assert network_reference(network_vrt(tmp_path / "local.vrt", str(local), size=8)) is None
    assert network_reference(local) is None
    wms = tmp_path / "wms.xml"
    wms.write_text("<GDAL_WMS><Service name='WMS'><ServerUrl>http://h/wms?</ServerUrl></Service>")
    assert network_reference(wms) == "http:/"
    with pytest.raises(InputError, match="TERNAUS_ALLOW_NETWORK_FILES=1"):
        check_local_file(remote, "RGB raster", allowed=False)
    check_local_file(remote, "RGB raster", allowed=True)
    assert recorder.requests == []


def test_cli_refuses_a_vrt_of_network_sources_without_touching_the_network(
    tmp_path, recorder, capsys, monkeypatch
):
    monkeypatch.delenv("TERNAUS_ALLOW_NETWORK_FILES", raising=False)
    vrt = network_vrt(tmp_path / "remote.vrt", f"/vsicurl/{recorder.url}/x.tif")
    code = cli.main(["predict", "--rgb", str(vrt), "--out", str(tmp_path / "o.gpkg")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR, err
    assert "on the network" in err and "TERNAUS_ALLOW_NETWORK_FILES=1" in err
    labels = f"/vsicurl/{recorder.url}/labels.geojson"
    code = cli.main(["evaluate", "--pred", labels, "--truth", labels])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR and "TERNAUS_ALLOW_NETWORK_FILES" in err, err
    assert recorder.requests == []


def test_allowed_network_files_are_read(tmp_path, recorder, capsys, monkeypatch):
    """The check is the only thing in the way: allowed, GDAL does ask the server."""
    monkeypatch.setenv("TERNAUS_ALLOW_NETWORK_FILES", "1")
    vrt = network_vrt(tmp_path / "remote.vrt", f"/vsicurl/{recorder.url}/x.tif")
    code = cli.main(["predict", "--rgb", str(vrt), "--out", str(tmp_path / "o.gpkg")])
    assert code != 0  # the server has no such file
    assert "TERNAUS_ALLOW_NETWORK_FILES" not in capsys.readouterr().err
    assert recorder.requests
