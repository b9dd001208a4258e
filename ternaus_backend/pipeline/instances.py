"""Building instances from the stitched probability maps, in blocks with a halo.

Per block: seeds = body > t_body and border < t_border (4-connected components); mask = body >
t_extent (t_extent <= t_body, by default equal); watershed of the mask from the seeds
(8-connectivity) over the touching-border probability, restricted to the mask, parts of the mask
without a seed dropped; instances with fewer than ``min_area_px`` pixels above t_body dropped (the
authors' rule when t_extent = t_body). Blocks are read with a halo; an instance belongs to the
block whose core holds the top-left corner of its bounding box, and is emitted only from there, so
a building on a block seam is one instance. Instances must fit in the halo to be whole; larger
ones are emitted clipped (and counted in ``clipped``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from ternaus_backend.models.metadata import Thresholds
from ternaus_backend.pipeline.store import ProbabilityStore, byte_level


def label_instances(body: np.ndarray, border: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Instance labels (int32, 0 = background) from body and border probabilities: floats in
    [0, 1], or the store's bytes (uint8, probability = value / 255) compared as bytes.

    The watershed only matters where one 8-connected part of the mask holds several seeds; a part
    with one seed is that seed's instance and a part with none is dropped, exactly as the watershed
    would decide, so the watershed runs on the crowded parts alone.
    """
    confident = body > _level(thresholds.body, body.dtype)
    seeds = confident & (border < _level(thresholds.border, border.dtype))
    extent = thresholds.extent_level()
    mask = confident if extent >= thresholds.body else body > _level(extent, body.dtype)
    markers, _ = ndimage.label(seeds)  # 4-connected, numbered in raster order
    parts, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros(body.shape, np.int32)
    seeded = markers > 0
    seeds_per_part = np.bincount(parts[seeded], minlength=count + 1)
    # The seed id of each part that holds exactly one seed (ids in a part with one seed agree).
    part_seed = np.zeros(count + 1, np.int32)
    part_seed[parts[seeded]] = markers[seeded]
    part_seed[seeds_per_part != 1] = 0
    labels = part_seed[parts]
    crowded = (seeds_per_part > 1)[parts]  # a bool gather, not an int64 one
    if crowded.any():
        _split_in_one_box(labels, markers, crowded, border)
    if thresholds.min_area_px > 1 and labels.max() > 0:
        # Which buildings exist is decided by their confident pixels; the extent only widens them.
        counted = labels[confident] if mask is not confident else labels.ravel()
        sizes = np.bincount(counted, minlength=int(labels.max()) + 1)
        small = sizes < thresholds.min_area_px
        small[0] = False
        labels[small[labels]] = 0
    return labels.astype(np.int32, copy=False)


def _split_in_one_box(
    labels: np.ndarray, markers: np.ndarray, crowded: np.ndarray, border: np.ndarray
) -> None:
    """Watershed of the ``crowded`` pixels from their seeds (8-connected) over the
    touching-border probability, written into ``labels``, over the bounding box of ``crowded``
    only: neighbours meet on the ridge of the border map, where the network drew the wall."""
    rows, cols = np.nonzero(crowded)
    box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    region = crowded[box]
    split = watershed(border[box], markers[box], mask=region, connectivity=2)
    labels[box][region] = split[region]


def _level(threshold: float, dtype: np.dtype) -> float:
    """``threshold`` on the scale of values of ``dtype`` (bytes: 255 = probability 1)."""
    return byte_level(threshold) if dtype == np.uint8 else threshold


@dataclass
class InstanceBlock:
    """Instances emitted from one block: labels of the read region and the ids to keep."""

    row0: int  # raster row/col of labels[0, 0]
    col0: int
    labels: np.ndarray
    body: np.ndarray  # stored bytes (uint8, probability = value / 255)
    ids: np.ndarray  # instance ids owned by this block
    confidence: np.ndarray  # mean body probability of each owned id
    clipped: int


def _owned_ids(
    labels: np.ndarray, core: tuple[int, int, int, int], edges: tuple[bool, bool, bool, bool]
) -> tuple[np.ndarray, int]:
    """Ids whose bounding-box corner lies in the core (rows r0..r1, cols c0..c1 of ``labels``).

    ``edges`` says which sides (top, left, bottom, right) of the read region are cut by the block
    (not the raster's edge); an owned instance touching such a side is larger than the halo.
    """
    r0, r1, c0, c1 = core
    ids, clipped = [], 0
    height, width = labels.shape
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        top, left = sl[0].start, sl[1].start
        if not (r0 <= top < r1 and c0 <= left < c1):
            continue
        ids.append(index)
        cut_top, cut_left, cut_bottom, cut_right = edges
        if (
            (cut_top and top == 0)
            or (cut_left and left == 0)
            or (cut_bottom and sl[0].stop == height)
            or (cut_right and sl[1].stop == width)
        ):
            clipped += 1
    return np.asarray(ids, dtype=np.int32), clipped


@dataclass(frozen=True)
class BlockSpec:
    """One block of the map: its core and the region read with the halo (raster pixels)."""

    row: int
    col: int
    r0: int
    r1: int
    c0: int
    c1: int
    core: tuple[int, int, int, int]  # rows, cols of the core inside the read region
    edges: tuple[bool, bool, bool, bool]  # sides cut by the block (not the raster's edge)


def block_specs(height: int, width: int, block_px: int, halo_px: int) -> list[BlockSpec]:
    """The blocks of a ``height`` x ``width`` map, row by row; a block can be processed once
    the map's rows up to ``spec.r1`` are final."""
    specs = []
    for br in range(0, height, block_px):
        for bc in range(0, width, block_px):
            r0, c0 = max(0, br - halo_px), max(0, bc - halo_px)
            r1, c1 = min(height, br + block_px + halo_px), min(width, bc + block_px + halo_px)
            core = (
                br - r0,
                min(br + block_px, height) - r0,
                bc - c0,
                min(bc + block_px, width) - c0,
            )
            edges = (r0 > 0, c0 > 0, r1 < height, c1 < width)
            specs.append(BlockSpec(br, bc, r0, r1, c0, c1, core, edges))
    return specs


def block_instances(
    store: ProbabilityStore, spec: BlockSpec, thresholds: Thresholds
) -> InstanceBlock:
    """The instances one block owns, from the stored bytes (no floats made of them)."""
    body, border = store.read_bytes(spec.r0, spec.r1, spec.c0, spec.c1)[:2]
    labels = label_instances(body, border, thresholds)
    ids, clipped = _owned_ids(labels, spec.core, spec.edges)
    confidence = (
        np.asarray(ndimage.mean(body, labels, ids), dtype=np.float64) / 255.0
        if len(ids)
        else np.zeros(0)
    )
    return InstanceBlock(spec.r0, spec.c0, labels, body, ids, confidence, clipped)
