"""The predict request the plugin sends: an existing output is replaced only when asked."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

from ternaus_qgis.core.extraction import ExtractionRequest, build_payload
from ternaus_qgis.core.raster_inputs import RasterInput


def _request(**kwargs) -> ExtractionRequest:
    crs = QgsCoordinateReferenceSystem("EPSG:32723")
    rgb = RasterInput("rgb", "RGB", 3, crs, QgsRectangle(0, 0, 10, 10), 0.5, 0.5, Path("a.tif"))
    return ExtractionRequest(
        rgb=rgb, extent=None, extent_crs=crs, out_path=Path("/tmp/o.gpkg"), **kwargs
    )


def test_overwrite_is_sent_only_when_the_user_chose_to_replace(qgis_app):
    assert "overwrite" not in build_payload(_request(), Path("a.tif"), None)
    payload = build_payload(_request(overwrite=True), Path("a.tif"), None)
    assert payload["overwrite"] is True
