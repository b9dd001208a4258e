"""The automatic validation split of a training area made of separate parts (e.g. the three
cells ``ternaus where-to-label`` proposed): the band always holds training-area pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ternaus_backend.training.dataset import TrainingSource, _automatic_split


def test_a_band_between_the_parts_moves_into_the_largest_part():
    area = np.zeros((100, 300), bool)
    area[10:90, 0:30] = True  # the largest part
    area[10:50, 270:300] = True
    area[60:90, 140:160] = True
    source = TrainingSource(rgb=Path("scene.tif"))
    moved = 0
    for seed in range(30):
        train, val, (r0, c0, r1, c1) = _automatic_split(area, 0.2, seed, source)
        assert (val & area).any() and (train & area).any()
        assert not (train & val).any()
        assert val[r0:r1, c0:c1].all() and val.sum() == (r1 - r0) * (c1 - c0)
        if c1 <= 30:  # the band of the largest part: the other parts all train
            moved += 1
            assert (train & area)[:, 100:].sum() == area[:, 100:].sum()
    assert moved > 0  # some seeds put the bounding box's band between the parts


def test_a_compact_area_keeps_the_band_of_its_bounding_box():
    area = np.zeros((100, 100), bool)
    area[20:80, 10:90] = True
    source = TrainingSource(rgb=Path("scene.tif"))
    train, val, (r0, c0, r1, c1) = _automatic_split(area, 0.2, 3, source)
    assert (r0, r1) == (20, 80) and 10 <= c0 < c1 <= 90  # columns across the whole box
    assert (val & area).any()
