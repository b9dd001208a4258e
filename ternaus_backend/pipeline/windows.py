"""Overlapping inference windows on a global grid, and the weights that blend them.

Windows have side ``tile_px`` and step ``tile_px - overlap_px``; the last window of each row and
column is shifted inward so every window lies inside the raster and every pixel is covered. A side
shorter than a tile gets one window of that side rounded up to a multiple of 32 (padded by
reflection when read). Logits of overlapping windows are averaged with weights that fall towards
the window border (never to zero), so no seam shows where windows meet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRIDE_MULTIPLE = 32


def round_up(value: int, multiple: int = STRIDE_MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class WindowGrid:
    """Window positions of a ``height`` x ``width`` raster: rows of windows, top to bottom."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def __iter__(self):
        """Yields (row_index, y0, x0) in raster order."""
        for i, y0 in enumerate(self.row_starts):
            for x0 in self.col_starts:
                yield i, y0, x0


def window_grid(height: int, width: int, tile_px: int, overlap_px: int) -> WindowGrid:
    """The windows covering a raster; ``tile_px`` must be a multiple of 32."""
    if tile_px % STRIDE_MULTIPLE:
        raise ValueError(f"tile_px must be a multiple of {STRIDE_MULTIPLE}, got {tile_px}")
    if not 0 <= overlap_px < tile_px:
        raise ValueError(f"overlap_px must be in [0, tile_px), got {overlap_px}")
    step = tile_px - overlap_px
    tile_h = tile_px if height >= tile_px else round_up(height)
    tile_w = tile_px if width >= tile_px else round_up(width)
    return WindowGrid(
        height,
        width,
        tile_h,
        tile_w,
        tuple(_starts(height, tile_h, step)),
        tuple(_starts(width, tile_w, step)),
    )


def _balanced_axis(length: int, max_tile: int, overlap: int) -> tuple[int, tuple[int, ...]]:
    """(tile, starts) of the fewest windows no larger than ``max_tile`` that cover ``length``
    with at least ``overlap`` px between neighbours, spread evenly (none shifted onto another)."""
    if length <= max_tile:
        return round_up(length), (0,)
    count = -(-(length - overlap) // (max_tile - overlap))
    tile = min(max_tile, round_up(-(-(length + (count - 1) * overlap) // count)))
    span = length - tile
    return tile, tuple(span * i // (count - 1) for i in range(count))


def balanced_grid(height: int, width: int, max_tile_px: int, overlap_px: int) -> WindowGrid:
    """Windows of at most ``max_tile_px`` (a multiple of 32) sized to the raster, so the overlap
    is the only pixels run twice: a 2048 px side with a 1088 px limit and 64 px overlap takes two
    1056 px windows, not three."""
    if max_tile_px % STRIDE_MULTIPLE or not 0 <= overlap_px < max_tile_px - STRIDE_MULTIPLE:
        raise ValueError(f"bad window limits: tile {max_tile_px}, overlap {overlap_px}")
    tile_h, rows = _balanced_axis(height, max_tile_px, overlap_px)
    tile_w, cols = _balanced_axis(width, max_tile_px, overlap_px)
    return WindowGrid(height, width, tile_h, tile_w, rows, cols)


def blend_weights(tile_h: int, tile_w: int, overlap_px: int) -> np.ndarray:
    """(tile_h, tile_w) float32 weights: 1 in the centre, a linear ramp over ``overlap_px`` at each
    border down to a small positive floor (so raster-edge pixels still count)."""

    def ramp(n: int) -> np.ndarray:
        if overlap_px <= 0:
            return np.ones(n, np.float32)
        pos = np.arange(n, dtype=np.float32)
        dist = np.minimum(pos, n - 1 - pos) + 0.5
        return np.clip(dist / overlap_px, 0.02, 1.0).astype(np.float32)

    return np.outer(ramp(tile_h), ramp(tile_w))
