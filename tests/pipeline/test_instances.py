"""Instances from probability maps: seeds, watershed, small ones dropped."""

from __future__ import annotations

import numpy as np
from skimage.measure import label
from skimage.segmentation import watershed

from ternaus_backend.models.metadata import Thresholds
from ternaus_backend.pipeline.instances import label_instances


def reference_labels(body, border, t: Thresholds) -> np.ndarray:
    """The rule written out plainly: watershed of the whole mask from all seeds over the border
    probability (the mask at the extent threshold, the body threshold unless set lower)."""
    mask = body > t.extent_level()
    markers = label((body > t.body) & (border < t.border), connectivity=1)
    labels = watershed(border, markers, mask=mask, connectivity=2)  # over the border map
    sizes = np.bincount(labels[body > t.body], minlength=labels.max() + 1)  # confident pixels
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
    for t in (
        Thresholds(body=0.5, border=0.55, min_area_px=20),
        Thresholds(body=0.6, border=0.55, min_area_px=20, extent=0.4),
    ):
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


def test_a_lower_extent_reaches_the_roof_edge_and_keeps_faint_blobs_out():
    body = np.zeros((40, 80))
    body[5:35, 5:35] = 0.6  # a roof whose edge the network is less sure of ...
    body[10:30, 10:30] = 0.9  # ... around a confident core
    body[5:35, 45:75] = 0.6  # a faint blob without a confident core
    border = np.zeros_like(body)
    core_only = label_instances(body, border, Thresholds(body=0.8, min_area_px=20))
    to_edge = label_instances(body, border, Thresholds(body=0.8, min_area_px=20, extent=0.5))
    assert core_only.max() == to_edge.max() == 1  # one building; the faint blob is no building
    assert (core_only > 0).sum() == 20 * 20
    assert (to_edge > 0).sum() == 30 * 30
    assert not to_edge[:, 40:].any()
    # Whether a building exists is decided by its confident pixels: a 20 x 20 core passes a
    # minimum of 400 px, whatever the extent, and fails 401 with or without the wider outline.
    for extent in (None, 0.5):
        kept = Thresholds(body=0.8, min_area_px=400, extent=extent)
        dropped = Thresholds(body=0.8, min_area_px=401, extent=extent)
        assert label_instances(body, border, kept).max() == 1
        assert label_instances(body, border, dropped).max() == 0
    # An extent above the body threshold changes nothing.
    high = label_instances(body, border, Thresholds(body=0.8, min_area_px=20, extent=0.95))
    np.testing.assert_array_equal(high, core_only)


def test_touching_buildings_meet_on_the_ridge_of_the_border_map():
    """The split follows the wall the network drew, not the midpoint between the seeds."""
    body = np.full((20, 60), 0.9)
    border = np.zeros_like(body)
    # Seeds: columns 0-9 and 50-59. Between them a wide, unsure border band whose ridge (the
    # wall) is at column 40, ten columns east of the midpoint between the seeds.
    border[:, 10:41] = np.linspace(0.5, 0.9, 31)
    border[:, 40:50] = np.linspace(0.9, 0.55, 10)
    labels = label_instances(body, border, Thresholds(body=0.5, border=0.5, min_area_px=1))
    assert labels.max() == 2
    left, right = labels[10, 0], labels[10, 59]
    assert (labels[:, :39] == left).all() and (labels[:, 42:] == right).all()
