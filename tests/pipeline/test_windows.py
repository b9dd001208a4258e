"""Window grids cover every pixel; blend weights are positive."""

from __future__ import annotations

import numpy as np
import pytest

from ternaus_backend.pipeline.windows import blend_weights, window_grid


@pytest.mark.parametrize("height,width", [(1000, 700), (512, 512), (100, 900), (33, 40)])
def test_windows_cover_the_raster_and_stay_inside(height, width):
    grid = window_grid(height, width, tile_px=256, overlap_px=64)
    cover = np.zeros((height, width), int)
    for _, y0, x0 in grid:
        assert y0 >= 0 and x0 >= 0
        assert y0 + grid.tile_h <= max(height, grid.tile_h)
        assert x0 + grid.tile_w <= max(width, grid.tile_w)
        cover[y0 : y0 + grid.tile_h, x0 : x0 + grid.tile_w] += 1
    assert cover.min() >= 1
    assert grid.tile_h % 32 == 0 and grid.tile_w % 32 == 0


def test_blend_weights_fall_to_the_border_but_stay_positive():
    w = blend_weights(128, 128, 32)
    assert w.min() > 0 and w[64, 64] == 1.0 and w[0, 64] < w[16, 64] < w[40, 64]


@pytest.mark.parametrize("side", [100, 512, 1088, 1089, 2048, 3000, 8192])
def test_balanced_windows_cover_everything_with_the_overlap_and_no_more_windows(side):
    from ternaus_backend.pipeline.windows import balanced_grid

    grid = balanced_grid(side, side, max_tile_px=1088, overlap_px=64)
    assert grid.tile_h <= 1088 and grid.tile_h % 32 == 0
    covered = np.zeros(side, bool)
    for start in grid.row_starts:
        covered[start : start + grid.tile_h] = True
    assert covered.all()
    gaps = np.diff(grid.row_starts)
    assert (grid.tile_h - gaps >= 64).all()  # neighbours overlap by the seam guard at least
    fewest = 1 if side <= 1088 else -(-(side - 64) // (1088 - 64))
    assert len(grid.row_starts) == fewest


def test_a_2048_px_side_takes_two_windows_on_a_cpu():
    from ternaus_backend.pipeline.windows import balanced_grid

    grid = balanced_grid(2048, 2048, max_tile_px=1088, overlap_px=64)
    assert (grid.tile_h, grid.row_starts) == (1056, (0, 992))
