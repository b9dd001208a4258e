"""A scene cut into blocks for workers, such that each block gives exactly what the whole-scene
run gives inside its core.

Every block is read with a halo around its core. Blocks start on the inference window grid of the
whole scene (multiples of the window step), and their far halo is one overlap longer, so the
windows a block runs over its core are the whole-scene run's windows, blended alike: probabilities
inside the core are the same. The halo is wider than a building, so a building whose centre lies
in the core is whole in the block; each building is kept by the one block whose core holds its
centre (no duplicates, no cut buildings at block seams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class Block:
    """One block: its core (the pixels it owns) and what it reads, in processing-grid pixels."""

    row: int
    col: int
    core: Window
    read: Window

    @property
    def name(self) -> str:
        return f"block-{self.row:04d}-{self.col:04d}"

    def read_bounds(self, transform: Affine) -> Bounds:
        """The read window as a bounding box in the grid's CRS."""
        return window_bounds(self.read, transform)

    def owns(self, col: float, row: float) -> bool:
        """True when the grid position (col, row) lies in the core (half-open on both axes)."""
        core = self.core
        return (
            core.col_off <= col < core.col_off + core.width
            and core.row_off <= row < core.row_off + core.height
        )


def _spans(length: int, core: int, near: int, far: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, read start, read end) along one axis."""
    return [
        (start, min(start + core, length), max(0, start - near), min(length, start + core + far))
        for start in range(0, length, core)
    ]


def plan_blocks(
    height: int, width: int, tile_px: int, overlap_px: int, block_px: int, halo_px: int
) -> list[Block]:
    """The blocks of a ``height`` x ``width`` processing grid, in raster order.

    ``block_px``: the wanted core side (rounded to whole window steps); ``halo_px``: at least the
    largest building (rounded up to whole window steps, never less than one step).
    """
    step = tile_px - overlap_px
    core = max(1, round(block_px / step)) * step
    near = max(1, math.ceil(max(halo_px, overlap_px) / step)) * step
    far = near + overlap_px
    blocks = []
    for i, (r0, r1, rr0, rr1) in enumerate(_spans(height, core, near, far)):
        for j, (c0, c1, rc0, rc1) in enumerate(_spans(width, core, near, far)):
            blocks.append(
                Block(
                    row=i,
                    col=j,
                    core=Window(c0, r0, c1 - c0, r1 - r0),
                    read=Window(rc0, rr0, rc1 - rc0, rr1 - rr0),
                )
            )
    return blocks
