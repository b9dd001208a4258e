"""A PNG of the image with building outlines drawn over it (for the demo and quick checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ternaus_backend.pipeline.raster import RasterInputs
from ternaus_backend.vector_io import read_polygons


def _stretch(rgb: np.ndarray) -> np.ndarray:
    """2-98 % per-band stretch to uint8 (H, W, 3)."""
    out = np.empty(rgb.shape[1:] + (3,), np.uint8)
    for band in range(3):
        lo, hi = np.percentile(rgb[band], (2, 98))
        out[..., band] = np.clip((rgb[band] - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
    return out


def render_overlay(
    rgb: str | Path,
    buildings: str | Path,
    out_png: str | Path,
    truth: str | Path | None = None,
    max_side_px: int = 2048,
) -> Path:
    """Draws ``buildings`` (yellow) and optionally ``truth`` (cyan) over the RGB raster."""
    with RasterInputs.open(rgb) as inputs:
        grid = inputs.grid
        scale = min(1.0, max_side_px / max(grid.width, grid.height))
        values, _ = inputs.read_overview(
            max_pixels=int(grid.width * grid.height * scale * scale) + 1
        )
        crs = grid.crs
    image = Image.fromarray(_stretch(values[:3]))
    sx, sy = image.width / grid.width, image.height / grid.height
    to_pixel = ~grid.transform
    draw = ImageDraw.Draw(image)
    layers = [(truth, (0, 255, 255))] if truth else []
    layers.append((buildings, (255, 230, 0)))
    for path, colour in layers:
        for poly in read_polygons(path, dst_crs=crs):
            ring = [to_pixel * xy for xy in poly.exterior.coords]
            draw.line([(c * sx, r * sy) for c, r in ring], fill=colour, width=2)
    out_png = Path(out_png)
    image.save(out_png)
    return out_png
