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
