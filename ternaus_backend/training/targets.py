"""Training targets from building polygons: body mask, touching-border mask and instance ids.

TernausNetV2 predicts two maps: the building *body* and the *touching borders* between buildings
that are very close or share a wall. At inference, seeds = body and not border, and a watershed
grows the seeds back over the body, so buildings in a terrace come out as separate polygons.

The touching-border rule (``make_targets``)
------------------------------------------
Let ``r = ceil(border_width_px / 2)`` (at least 1). Every building is rasterised with its own id
(pixel-centre rule, ``all_touched=False``). A pixel is a border pixel when its
``(2r+1) x (2r+1)`` square neighbourhood (clipped at the raster edge) contains pixels of at least
two *different* buildings. Equivalently: dilate every building by a ``(2r+1)`` square; the
border is where two or more dilated buildings overlap (the "touching zone" of the authors).
It is computed with two rank filters of the id image: ``max(ids) != min(ids, background=inf)``.

What that means in pixels (``g`` = background pixels between two buildings along a row/column):

- shared wall (``g = 0``): a band ``2r`` px wide centred on the wall, ``r`` px on each side;
- narrow gap (``1 <= g <= r``): the whole gap plus ``r - g`` px into each building;
- wider gap (``r < g <= 2r - 1``): the middle ``2r - g`` px of the gap only;
- wider gaps (``g >= 2r``) and isolated buildings: nothing.

In all cases the band is ``2r - g`` px wide and centred on the gap. For the default
``border_width_px=3`` (``r = 2``): 4 px across a shared wall, 1-2 px gaps marked entirely, a
3 px gap in its middle pixel; buildings at most ``border_width_px`` px apart count as touching.
Buildings that meet only at a corner get a ``2r x 2r`` square around the corner.

So the band across a shared wall is ``border_width_px`` rounded up to an even number of pixels
(symmetric about the wall), and gaps of up to ``border_width_px`` rounded down to an odd number
of pixels count as touching (``border_width_px`` 1 and 2 behave alike, as do 3 and 4).
Border pixels may be background pixels (the gap) as well as building pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
from affine import Affine
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from ternaus_backend.errors import InputError, LabelError
from ternaus_backend.vector_io import polygon_parts, read_polygons

__all__ = [
    "Targets",
    "border_radius_px",
    "make_targets",
    "touching_borders",
    "read_label_polygons",
    "aoi_mask",
    "split_by_area",
]

_NO_BUILDING = np.iinfo(np.int32).max


@dataclass
class Targets:
    """Per-pixel training targets on one raster grid.

    ``body``: 1 inside buildings; ``border``: 1 in the touching zone (see the module docstring);
    ``instances``: 0 for background, ``k`` for the k-th polygon (1-based) after MultiPolygons
    were exploded and invalid polygons repaired; where polygons overlap, the later one wins.
    """

    body: np.ndarray  # uint8 (H, W)
    border: np.ndarray  # uint8 (H, W)
    instances: np.ndarray  # int32 (H, W)

    @property
    def n_instances(self) -> int:
        """Number of buildings that cover at least one pixel."""
        return int(np.count_nonzero(np.unique(self.instances)))


def border_radius_px(border_width_px: int) -> int:
    """Half-size ``r`` of the square neighbourhood used for ``border_width_px`` (>= 1)."""
    return max(1, math.ceil(border_width_px / 2))


def _explode(polygons: Iterable[BaseGeometry | None]) -> list[Polygon]:
    """Repaired, non-empty Polygon parts of ``polygons`` in order."""
    parts: list[Polygon] = []
    for geom in polygons:
        parts.extend(polygon_parts(geom))
    return parts


def _check_grid(shape: Sequence[int]) -> tuple[int, int]:
    height, width = (int(v) for v in shape[-2:])
    if height <= 0 or width <= 0:
        raise InputError(f"Empty raster grid {height}x{width}: choose a non-empty extent.")
    return height, width


def touching_borders(instances: np.ndarray, border_width_px: int = 3) -> np.ndarray:
    """Touching-border mask (uint8) of an instance-id image (0 = background), see module doc."""
    ids = np.asarray(instances, dtype=np.int32)
    if ids.max(initial=0) == 0:
        return np.zeros(ids.shape, dtype=np.uint8)
    size = 2 * border_radius_px(border_width_px) + 1
    highest = ndimage.maximum_filter(ids, size=size, mode="constant", cval=0)
    with_bg_high = np.where(ids > 0, ids, _NO_BUILDING)
    lowest = ndimage.minimum_filter(with_bg_high, size=size, mode="constant", cval=_NO_BUILDING)
    border = (highest > 0) & (lowest != _NO_BUILDING) & (highest != lowest)
    return border.astype(np.uint8)


def make_targets(
    polygons: Iterable[BaseGeometry | None],
    transform: Affine,
    shape: Sequence[int],
    border_width_px: int = 3,
) -> Targets:
    """Rasterise building polygons (already in the raster CRS) into body, border and instances.

    MultiPolygons are exploded (each part is one building); invalid polygons are repaired with
    ``shapely.make_valid`` (parts of an invalid MultiPolygon that share an edge merge into one
    building, a self-crossing bow-tie becomes two); empty geometries, points and lines are
    ignored. A pixel belongs to a building when its centre is inside it (``all_touched=False``);
    ``body`` is the union of all buildings, the same pixels as ``instances > 0``.
    ``border_width_px`` sets the touching zone (module docstring): a band
    ``2 * ceil(border_width_px / 2)`` px wide across a shared wall.
    """
    height, width = _check_grid(shape)
    if border_width_px < 1:
        raise InputError(f"border_width_px must be at least 1, got {border_width_px}.")
    parts = _explode(polygons)
    instances = np.zeros((height, width), dtype=np.int32)
    if parts:
        rasterio.features.rasterize(
            ((part, k) for k, part in enumerate(parts, start=1)),
            out=instances,
            transform=transform,
            all_touched=False,
        )
    body = (instances > 0).astype(np.uint8)
    border = touching_borders(instances, border_width_px)
    return Targets(body=body, border=border, instances=instances)


def read_label_polygons(path: str | Path, dst_crs: Any) -> list[Polygon]:
    """Read building footprints from a vector file, reprojected to ``dst_crs`` (the raster CRS).

    Raises ``LabelError`` when the file cannot be read or holds no polygons.
    """
    polygons = read_polygons(path, dst_crs=dst_crs, error_cls=LabelError)
    if not polygons:
        raise LabelError(
            f"{Path(path).name} holds no building polygons. Draw or import footprints "
            "(polygon features) for the training area and save the layer before training."
        )
    return polygons


def aoi_mask(
    aoi_polygons: Iterable[BaseGeometry | None] | None,
    transform: Affine,
    shape: Sequence[int],
) -> np.ndarray:
    """Pixels inside the training areas (bool (H, W)); ``None`` means the whole raster.

    Training areas say where the labels are complete: pixels outside are ignored by the loss.
    A pixel is inside when its centre is; an empty list gives an all-False mask.
    """
    height, width = _check_grid(shape)
    if aoi_polygons is None:
        return np.ones((height, width), dtype=bool)
    parts = _explode(aoi_polygons)
    if not parts:
        return np.zeros((height, width), dtype=bool)
    mask = rasterio.features.rasterize(
        ((part, 1) for part in parts),
        out_shape=(height, width),
        transform=transform,
        all_touched=False,
        dtype=np.uint8,
    )
    return mask.astype(bool)


def split_by_area(
    shape: Sequence[int],
    val_fraction: float = 0.2,
    seed: int = 0,
    gap_px: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a raster grid into training and validation pixels by area, never by random pixels.

    Validation is one contiguous band of whole rows (or whole columns, when the raster is wider
    than tall) holding ``round(val_fraction * length)`` lines (at least 1, leaving at least 1 for
    training); ``seed`` picks its offset uniformly, so it may sit at an edge or in the middle.
    ``gap_px`` lines on each side of the band belong to neither mask, so buildings cut by the
    split leak less. Returns ``(train_mask, val_mask)``, bool (H, W), disjoint.
    """
    height, width = _check_grid(shape)
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    if gap_px < 0:
        raise InputError(f"gap_px must be 0 or more, got {gap_px}.")
    along_rows = height >= width
    length = height if along_rows else width
    n_val = min(max(1, round(val_fraction * length)), length - 1)
    if n_val < 1 or length - n_val - 2 * gap_px < 1:
        raise InputError(
            f"A {height}x{width} px raster is too small to split into training and validation "
            "areas: use a larger extent or give a separate validation area."
        )
    start = int(np.random.default_rng(seed).integers(0, length - n_val + 1))
    lines = np.arange(length)
    val_lines = (lines >= start) & (lines < start + n_val)
    near = (lines >= start - gap_px) & (lines < start + n_val + gap_px)
    train_lines = ~near
    if along_rows:
        val = np.broadcast_to(val_lines[:, None], (height, width))
        train = np.broadcast_to(train_lines[:, None], (height, width))
    else:
        val = np.broadcast_to(val_lines[None, :], (height, width))
        train = np.broadcast_to(train_lines[None, :], (height, width))
    return train.copy(), val.copy()
