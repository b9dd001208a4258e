"""Raster layers as backend inputs: a plain GeoTIFF goes as its path, anything else is exported.

:func:`raster_input` runs on the thread that owns the layer (the GUI thread for the dock): it
checks the layer and, when the backend cannot read its source as it is, clones the data provider
so that :func:`materialize` can export it from a worker thread with ``QgsRasterFileWriter``
(block by block: memory does not grow with the extent).

Exported: layers that are not plain GeoTIFF files (a VRT, a raster in a GeoPackage, a memory layer)
and layers whose CRS was overridden in QGIS (the file says another CRS than the layer), at the
layer's own pixels.

Rendered: layers without pixels of their own (web layers: XYZ tiles, WMS/WMTS, ArcGIS MapServer)
are drawn by their QGIS provider for the extent at a ground resolution chosen by the user (default:
the model's), again block by block, into an RGBA GeoTIFF whose alpha marks what the service did not
cover.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsRasterBlockFeedback,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsUnitTypes,
)

from ..exceptions import CancelledByUser, LayerError

#: File endings the backend reads directly (rasterio / GDAL GeoTIFF).
DIRECT_SUFFIXES = {".tif", ".tiff"}
#: Extra pixels of context exported around the requested extent.
EXPORT_MARGIN_PX = 64
#: Ground resolution of rendered layers when neither the user nor the model says one (metres).
FALLBACK_RESOLUTION_M = 0.5
#: Provider data types of layers that are colour images (one ARGB band: red, green, blue, alpha).
COLOUR_TYPES = {Qgis.ARGB32, Qgis.ARGB32_Premultiplied}


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
    rendered: bool = False  # drawn at ``resolution_m`` (web layers), not read at its own pixels
    resolution_m: float | None = None  # ground pixel of a rendered layer (None: the model's)

    @property
    def needs_export(self) -> bool:
        return self.path is None


def is_rendered(layer: QgsRasterLayer) -> bool:
    """True for layers without pixels of their own (XYZ, WMS/WMTS...): they are drawn on request."""
    provider = layer.dataProvider()
    return not (provider.capabilities() & provider.Size)


def band_count(layer: QgsRasterLayer) -> int:
    """Bands as the backend will see them: a colour image (web tiles) gives red, green, blue."""
    if layer.bandCount() == 1 and layer.dataProvider().dataType(1) in COLOUR_TYPES:
        return 3
    return layer.bandCount()


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


def raster_input(
    layer: QgsRasterLayer | None, role: str, min_bands: int, resolution_m: float | None = None
) -> RasterInput:
    """Check a layer and describe it for :func:`materialize`; ``LayerError`` says what is wrong.

    ``resolution_m``: the ground pixel a web layer is rendered at (None: the model's).
    """
    if layer is None or not isinstance(layer, QgsRasterLayer):
        raise LayerError(f"Choose an {role} raster layer.")
    if not layer.isValid():
        raise LayerError(
            f"The {role} layer '{layer.name()}' cannot be read: check its source file.",
            details=layer.source(),
        )
    rendered = is_rendered(layer)
    if rendered and role != "RGB":
        raise LayerError(
            f"The {role} layer '{layer.name()}' is a web layer (a picture, not measured bands): "
            "choose a raster file with the multispectral bands, or no multispectral layer.",
        )
    bands = band_count(layer)
    if bands < min_bands:
        raise LayerError(
            f"The {role} layer '{layer.name()}' has {bands} band(s); it needs at least "
            f"{min_bands}. Choose another layer.",
        )
    path, reason = (None, "a web layer, rendered") if rendered else direct_path(layer)
    return RasterInput(
        name=layer.name(),
        role=role,
        band_count=bands,
        crs=layer.crs(),
        extent=layer.extent(),
        pixel_x=layer.rasterUnitsPerPixelX(),
        pixel_y=layer.rasterUnitsPerPixelY(),
        path=path,
        provider=None if path is not None else layer.dataProvider().clone(),
        reason=reason,
        rendered=rendered,
        resolution_m=resolution_m or None,
    )


def crs_units_per_metre(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle) -> float:
    """CRS units per ground metre across the middle of ``extent`` (web mercator stretches
    distances by 1 / cos(latitude); degrees are not metres)."""
    measure = QgsDistanceArea()
    measure.setSourceCrs(crs, QgsProject.instance().transformContext())
    measure.setEllipsoid(crs.ellipsoidAcronym() or "WGS84")
    y = extent.center().y()
    metres = measure.measureLine(
        QgsPointXY(extent.xMinimum(), y), QgsPointXY(extent.xMaximum(), y)
    )
    metres = measure.convertLengthMeasurement(metres, QgsUnitTypes.DistanceMeters)
    if not metres > 0:
        raise LayerError(f"The extent {extent.toString()} has no width: choose a larger extent.")
    return extent.width() / metres


def render_grid(
    raster: RasterInput,
    extent: QgsRectangle,
    extent_crs: QgsCoordinateReferenceSystem,
    resolution_m: float,
) -> tuple[QgsRectangle, int, int]:
    """Extent (in the layer's CRS, with the context margin) and size in pixels at which a web
    layer is rendered so that one pixel covers ``resolution_m`` on the ground."""
    if extent_crs.isValid() and extent_crs != raster.crs:
        transform = QgsCoordinateTransform(extent_crs, raster.crs, QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    extent = extent.intersect(raster.extent) if not raster.extent.isEmpty() else extent
    if extent.isEmpty():
        raise LayerError(
            f"The extent lies outside the web layer '{raster.name}': choose an extent on the map."
        )
    pixel = resolution_m * crs_units_per_metre(raster.crs, extent)
    area = QgsRectangle(extent)
    area.grow(EXPORT_MARGIN_PX * pixel)
    cols = max(1, round(area.width() / pixel))
    rows = max(1, round(area.height() / pixel))
    return area, cols, rows


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

    Runs in a worker thread. The export goes block by block through ``QgsRasterFileWriter``, in
    the layer's CRS, at the layer's own resolution or, for a web layer, rendered at
    ``raster.resolution_m`` (``FALLBACK_RESOLUTION_M`` when unset); ``CancelledByUser`` when
    cancelled.
    """
    if not raster.needs_export:
        return raster.path
    if raster.rendered:
        resolution = raster.resolution_m or FALLBACK_RESOLUTION_M
        area, cols, rows = render_grid(raster, extent, extent_crs, resolution)
    else:
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
