"""Instances from probability maps: seeds, watershed, small ones dropped."""

from __future__ import annotations

import numpy as np
from skimage.measure import label
from skimage.segmentation import watershed

from ternaus_backend.models.metadata import Thresholds
from ternaus_backend.pipeline.instances import label_instances


def reference_labels(body, border, t: Thresholds) -> np.ndarray:
    """The authors' rule written out plainly: watershed of the whole mask from all seeds."""
    mask = body > t.body
    markers = label(mask & (border < t.border), connectivity=1)
    labels = watershed(mask.astype(np.uint8), markers, mask=mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    small = sizes < t.min_area_px
    small[0] = False
    labels[small[labels]] = 0
    return labels


def test_touching_buildings_are_split_along_the_border():
    body = np.zeros((40, 60))
    body[10:30, 5:55] = 0.9  # one blob: two houses sharing a wall at column 30
    border = np.zeros_like(body)
    border[10:30, 28:32] = 0.9
    labels = label_instances(body, border, Thresholds())
    assert len(np.unique(labels)) == 3  # background + two houses
    assert labels[20, 10] != labels[20, 50]
    assert (labels[10:30, 5:55] > 0).all()  # the border pixels are given to one side or the other


def test_fast_path_gives_the_same_labels_as_the_plain_watershed():
    rng = np.random.default_rng(4)
    from scipy import ndimage

    body = ndimage.gaussian_filter(rng.random((200, 240)), 3)
    body = (body - body.min()) / (body.max() - body.min())
    border = ndimage.gaussian_filter(rng.random((200, 240)), 2)
    border = (border - border.min()) / (border.max() - border.min())
    t = Thresholds(body=0.5, border=0.55, min_area_px=20)
    ours, ref = label_instances(body, border, t), reference_labels(body, border, t)
    assert ref.max() > 10
    # Same partition (ids may be numbered alike, but compare as partitions to be safe).
    pairs = set(zip(ours.ravel().tolist(), ref.ravel().tolist(), strict=True))
    assert len(pairs) == len(np.unique(ours)) == len(np.unique(ref))


def test_seedless_and_small_parts_are_dropped():
    body = np.zeros((30, 30))
    body[2:6, 2:6] = 0.9  # 16 px: under 20
    body[10:20, 10:20] = 0.9
    border = np.zeros_like(body)
    border[10:20, 10:20] = 0.9  # all border: no seed
    assert label_instances(body, border, Thresholds()).max() == 0


def test_thresholds_on_the_stored_bytes_equal_thresholds_on_probabilities():
    """Issue 11: the store's uint8 values are compared as bytes; same instances as floats."""
    rng = np.random.default_rng(5)
    body_bytes = rng.integers(0, 256, size=(120, 140)).astype(np.uint8)
    border_bytes = rng.integers(0, 256, size=(120, 140)).astype(np.uint8)
    for t in (Thresholds(), Thresholds(body=0.8, border=0.3, min_area_px=3)):
        from_bytes = label_instances(body_bytes, border_bytes, t)
        from_floats = label_instances(
            body_bytes.astype(np.float32) / 255.0, border_bytes.astype(np.float32) / 255.0, t
        )
        np.testing.assert_array_equal(from_bytes, from_floats)
