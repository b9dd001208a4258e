"""Raster layers as backend inputs: a plain GeoTIFF goes as its path, anything else is exported.

:func:`raster_input` runs on the thread that owns the layer (the GUI thread for the dock): it
checks the layer and, when the backend cannot read its source as it is, clones the data provider
so that :func:`materialize` can export it from a worker thread with ``QgsRasterFileWriter``
(block by block: memory does not grow with the extent).

Exported: layers that are not plain GeoTIFF files (a VRT, a raster in a GeoPackage, a web or memory
layer) and layers whose CRS was overridden in QGIS (the file says another CRS than the layer).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsProject,
    QgsRasterBlockFeedback,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
)

from ..exceptions import CancelledByUser, LayerError

#: File endings the backend reads directly (rasterio / GDAL GeoTIFF).
DIRECT_SUFFIXES = {".tif", ".tiff"}
#: Extra pixels of context exported around the requested extent.
EXPORT_MARGIN_PX = 64


@dataclass
class RasterInput:
    """A raster layer, described so a worker thread can hand it to the backend."""

    name: str
    role: str  # "RGB" or "multispectral"
    band_count: int
    crs: QgsCoordinateReferenceSystem
    extent: QgsRectangle
    pixel_x: float
    pixel_y: float
    path: Path | None = None  # set when the backend reads the file directly
    provider: Any = None  # a cloned data provider, when it must be exported
    reason: str = ""  # why it is exported

    @property
    def needs_export(self) -> bool:
        return self.path is None


def direct_path(layer: QgsRasterLayer) -> tuple[Path | None, str]:
    """``(path, "")`` when the backend can read the layer's file as it is, else ``(None, why)``."""
    if layer.providerType() != "gdal":
        return None, f"a {layer.providerType()} layer"
    source = layer.source()
    path = Path(source)
    if "|" in source or not path.is_file():
        return None, "not a plain file"
    if path.suffix.lower() not in DIRECT_SUFFIXES:
        return None, f"a {path.suffix or 'raster'} file"
    if layer.crs() != layer.dataProvider().crs():
        return None, "its CRS is set in QGIS, not in the file"
    return path.resolve(), ""


def raster_input(layer: QgsRasterLayer | None, role: str, min_bands: int) -> RasterInput:
    """Check a layer and describe it for :func:`materialize`; ``LayerError`` says what is wrong."""
    if layer is None or not isinstance(layer, QgsRasterLayer):
        raise LayerError(f"Choose an {role} raster layer.")
    if not layer.isValid():
        raise LayerError(
            f"The {role} layer '{layer.name()}' cannot be read: check its source file.",
            details=layer.source(),
        )
    if layer.bandCount() < min_bands:
        raise LayerError(
            f"The {role} layer '{layer.name()}' has {layer.bandCount()} band(s); it needs at least "
            f"{min_bands}. Choose another layer.",
        )
    path, reason = direct_path(layer)
    return RasterInput(
        name=layer.name(),
        role=role,
        band_count=layer.bandCount(),
        crs=layer.crs(),
        extent=layer.extent(),
        pixel_x=layer.rasterUnitsPerPixelX(),
        pixel_y=layer.rasterUnitsPerPixelY(),
        path=path,
        provider=None if path is not None else layer.dataProvider().clone(),
        reason=reason,
    )


def export_extent(
    raster: RasterInput, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem
) -> QgsRectangle:
    """The requested extent in the layer's CRS, with a margin, snapped to its pixels and clipped
    to the layer; ``LayerError`` when they do not overlap."""
    if extent_crs.isValid() and extent_crs != raster.crs:
        transform = QgsCoordinateTransform(extent_crs, raster.crs, QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    grown = QgsRectangle(extent)
    grown.grow(EXPORT_MARGIN_PX * max(raster.pixel_x, raster.pixel_y))
    clipped = grown.intersect(raster.extent)
    if clipped.isEmpty():
        raise LayerError(
            f"The extent does not overlap the {raster.role} layer '{raster.name}': choose an "
            "extent over the layer (e.g. the layer's extent).",
        )
    origin_x, origin_y = raster.extent.xMinimum(), raster.extent.yMaximum()
    col0 = int((clipped.xMinimum() - origin_x) // raster.pixel_x)
    col1 = -int(-(clipped.xMaximum() - origin_x) // raster.pixel_x)
    row0 = int((origin_y - clipped.yMaximum()) // raster.pixel_y)
    row1 = -int(-(origin_y - clipped.yMinimum()) // raster.pixel_y)
    return QgsRectangle(
        origin_x + col0 * raster.pixel_x,
        origin_y - row1 * raster.pixel_y,
        origin_x + col1 * raster.pixel_x,
        origin_y - row0 * raster.pixel_y,
    )


def materialize(
    raster: RasterInput,
    extent: QgsRectangle,
    extent_crs: QgsCoordinateReferenceSystem,
    folder: Path,
    progress: Callable[[float], None],
    cancelled: Callable[[], bool],
) -> Path:
    """The path the backend reads: the layer's own file, or a GeoTIFF exported for the extent.

    Runs in a worker thread. The export goes block by block through ``QgsRasterFileWriter`` at the
    layer's own resolution and CRS; ``CancelledByUser`` when cancelled.
    """
    if not raster.needs_export:
        return raster.path
    area = export_extent(raster, extent, extent_crs)
    cols = max(1, round(area.width() / raster.pixel_x))
    rows = max(1, round(area.height() / raster.pixel_y))
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{_safe(raster.name)}-{uuid.uuid4().hex[:8]}.tif"
    writer = QgsRasterFileWriter(str(out))
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    writer.setMaxTileWidth(1024)
    writer.setMaxTileHeight(1024)
    pipe = QgsRasterPipe()
    if not pipe.set(raster.provider.clone()):
        raise LayerError(f"The {raster.role} layer '{raster.name}' cannot be exported.")
    feedback = QgsRasterBlockFeedback()

    def on_progress(value: float) -> None:  # called by the writer, in this thread, per block
        progress(float(value))
        if cancelled():
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    error = writer.writeRaster(
        pipe, cols, rows, area, raster.crs, QgsCoordinateTransformContext(), feedback
    )
    if cancelled() or feedback.isCanceled():
        out.unlink(missing_ok=True)
        raise CancelledByUser("Cancelled while exporting the layer.")
    if error != QgsRasterFileWriter.NoError:
        out.unlink(missing_ok=True)
        raise LayerError(
            f"The {raster.role} layer '{raster.name}' ({raster.reason}) could not be exported "
            f"to a GeoTIFF (QGIS error code {int(error)}). Save it as a GeoTIFF "
            "(Export > Save As) and use that layer.",
            details=f"export to {out}, {cols}x{rows} px, extent {area.toString()}",
        )
    return out


def export_folder() -> Path:
    """Where exported layers go: a folder in QGIS's temporary folder for this process."""
    return Path(tempfile.gettempdir()) / "ternaus-qgis-exports"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "layer"
