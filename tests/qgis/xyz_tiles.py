"""Local XYZ tiles made from a GeoTIFF, so web-layer tests need no internet.

:func:`write_xyz_tiles` cuts a raster into 256 px web-mercator PNG tiles (``{z}/{x}/{y}.png``,
transparent outside the raster) with rasterio's warper; QGIS opens them as an XYZ layer through a
``file:///`` URL, exactly as it opens a tile server.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

#: Half the width of the web-mercator world (EPSG:3857), in metres.
ORIGIN = 20037508.342789244
TILE_PX = 256


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of one XYZ tile in EPSG:3857."""
    size = 2 * ORIGIN / 2**z
    left, top = -ORIGIN + x * size, ORIGIN - y * size
    return left, top - size, left + size, top


def write_xyz_tiles(tif: Path, folder: Path, zoom: int) -> str:
    """Tiles of ``tif`` at ``zoom`` under ``folder``; returns the XYZ layer's source for QGIS."""
    from qgis.PyQt.QtGui import QImage

    with rasterio.open(tif) as src:
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        size = 2 * ORIGIN / 2**zoom
        xs = range(math.floor((left + ORIGIN) / size), math.floor((right + ORIGIN) / size) + 1)
        ys = range(math.floor((ORIGIN - top) / size), math.floor((ORIGIN - bottom) / size) + 1)
        for x in xs:
            for y in ys:
                transform = from_bounds(*tile_bounds(zoom, x, y), TILE_PX, TILE_PX)
                with WarpedVRT(
                    src, crs="EPSG:3857", transform=transform, width=TILE_PX, height=TILE_PX
                ) as vrt:
                    rgb = vrt.read([1, 2, 3])
                    alpha = vrt.dataset_mask()
                rgba = np.ascontiguousarray(
                    np.concatenate([rgb, alpha[None]], axis=0).transpose(1, 2, 0), dtype=np.uint8
                )
                path = folder / str(zoom) / str(x) / f"{y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image = QImage(rgba.data, TILE_PX, TILE_PX, 4 * TILE_PX, QImage.Format_RGBA8888)
                if not image.save(str(path)):
                    raise OSError(f"could not write {path}")
    url = f"file://{folder.resolve()}/{{z}}/{{x}}/{{y}}.png"
    return f"type=xyz&url={url}&zmin={zoom}&zmax={zoom}"
