"""Training data from user rasters and label layers: in-memory sources and random crops.

Each source is an RGB raster (optionally with a multispectral raster of the same scene), a label
layer of building footprints and optionally a training area (AOI) polygon layer. A source is read
through :class:`~ternaus_backend.pipeline.raster.RasterInputs` and normalised with the model's
:class:`~ternaus_backend.pipeline.normalize.Normalizer`, exactly as extraction will read it.

Every source is read at one ground resolution, the model's (``resolution_m``): a raster of another
pixel size is resampled on the fly as extraction does (:mod:`~ternaus_backend.pipeline.raster`,
same tolerance, same grid), and the labels are rasterised on that grid. Scale jitter
(:mod:`.augment`) then varies the resolution around the model's.

Training rasters are held in memory (image, targets, weights). With a training area (AOI) only
the bounding box of the AOI and the validation area, plus a margin of one crop size (so crops
near the AOI edge see real context), is read; without one, the whole raster. A grid larger than
:data:`MAX_TRAIN_PIXELS` (after that cropping) is refused. Normalisation statistics always come
from the whole raster (``RasterInputs.read_overview``), as in extraction, whatever is read.

Pixel weights: 1 inside the training area (default: the raster extent) where the raster holds
data, 0 elsewhere; 0 in the validation area and a gap around it, so the loss never sees a
validation label; 0 where a crop runs past the raster edge (reflect padding).

Validation area: the ``val_aoi`` polygons when given, else one contiguous band of the pixel
bounding box of the training area (:func:`~ternaus_backend.training.targets.split_by_area` on that
box), never random pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import torch
from affine import Affine
from pydantic import BaseModel, Field
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ternaus_backend.errors import InputError, LabelError
from ternaus_backend.models.metadata import Normalization
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.raster import (
    Bounds,
    GridInfo,
    RasterInputs,
    input_band_names,
    raster_env,
)
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from ternaus_backend.training.augment import (
    AugmentConfig,
    Sample,
    augment,
    random_scale_factor,
    resize_sample,
)
from ternaus_backend.training.targets import aoi_mask, make_targets, split_by_area
from ternaus_backend.vector_io import read_polygons

__all__ = [
    "MAX_TRAIN_PIXELS",
    "TrainingSource",
    "PreparedSource",
    "prepare_source",
    "prepare_sources",
    "input_band_names",
    "CropDataset",
    "val_tiles",
    "read_window",
    "describe_sources",
    "native_resolution_m",
]

#: Largest grid (pixels) a training source may have: about 12000 x 12000.
MAX_TRAIN_PIXELS = 12_000 * 12_000
#: Pixels between the validation area and the nearest training pixel (weight 0).
VAL_GAP_PX = 8
#: At most this many candidate crop centres are kept per source and kind.
_MAX_CANDIDATES = 1_000_000


class TrainingSource(BaseModel):
    """One training scene: RGB (+ optional MS) raster, building labels, optional areas."""

    rgb: Path
    ms: Path | None = None
    #: Building footprints; ``None``: no labels at all, the starting model adapts to the imagery
    #: by self-training alone (:mod:`.pseudo`).
    labels: Path | None = None
    aoi: Path | None = None
    val_aoi: Path | None = None
    assume_crs: str | None = Field(
        None, description="CRS of rasters that have a geotransform but no CRS, e.g. EPSG:32636"
    )


@dataclass
class PreparedSource:
    """A source loaded into memory on its processing grid (at the model's resolution).

    ``image`` (C, H, W) float32, normalised (nodata pixels 0); ``target`` (2, H, W) uint8 (body,
    touching border); ``train_weight`` (H, W) float32; ``val_mask`` (H, W) bool;
    ``val_region`` and ``label_polygons`` are in the raster CRS.
    """

    source: TrainingSource
    grid: GridInfo
    image: np.ndarray
    target: np.ndarray
    train_weight: np.ndarray
    val_mask: np.ndarray
    val_region: BaseGeometry | None
    label_polygons: list[BaseGeometry]
    band_names: list[str]
    resolution_m: float
    positive_train_px: int = 0
    labelled_px: int = 0
    #: The raster was resampled to the wanted resolution (its own pixels differ from it).
    resampled: bool = False
    #: Unlabelled pixels around the training area that self-training may use (:mod:`.pseudo`).
    context_mask: np.ndarray | None = None
    #: Pixels whose targets are the starting model's confident answers (set by :mod:`.pseudo`).
    pseudo_mask: np.ndarray | None = None
    #: Where the labels are complete: the training area with the validation area (raster CRS).
    label_region: BaseGeometry | None = None

    def __post_init__(self) -> None:
        empty = np.zeros(self.train_weight.shape, dtype=bool)
        if self.context_mask is None:
            self.context_mask = empty
        if self.pseudo_mask is None:
            self.pseudo_mask = empty.copy()

    @property
    def name(self) -> str:
        return self.source.rgb.name

    @property
    def has_validation(self) -> bool:
        return bool(self.val_mask.any()) and self.val_region is not None

    def val_bbox(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the validation pixels' bounding box, in the raster CRS."""
        rows = np.flatnonzero(self.val_mask.any(axis=1))
        cols = np.flatnonzero(self.val_mask.any(axis=0))
        return _pixel_box(self.grid.transform, rows[0], cols[0], rows[-1] + 1, cols[-1] + 1).bounds


def _pixel_box(transform: Affine, row0: int, col0: int, row1: int, col1: int) -> BaseGeometry:
    x0, y0 = transform * (col0, row0)
    x1, y1 = transform * (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _read_area_polygons(path: Path, crs: Any, role: str) -> list[BaseGeometry]:
    """The polygons of an area layer, in the raster CRS (``InputError`` when it holds none)."""
    polygons = read_polygons(path, dst_crs=crs, error_cls=InputError)
    if not polygons:
        raise InputError(f"The {role} layer {path.name} holds no polygons; draw the area first.")
    return polygons


def _area_mask(
    polygons: Sequence[BaseGeometry], transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, BaseGeometry]:
    """Mask and union (raster CRS) of area polygons, clipped to the grid."""
    mask = aoi_mask(polygons, transform, shape)
    region = shapely.union_all(polygons).intersection(_pixel_box(transform, 0, 0, *shape))
    return mask, region


def _read_bbox(
    source: TrainingSource, grid: GridInfo, areas: Sequence[BaseGeometry], margin_px: int
) -> Bounds:
    """Bounds (raster CRS) of the training and validation areas plus ``margin_px`` pixels.

    ``InputError`` when they miss the raster altogether.
    """
    xmin, ymin, xmax, ymax = shapely.union_all(list(areas)).bounds
    dx = margin_px * math.hypot(grid.transform.a, grid.transform.d)
    dy = margin_px * math.hypot(grid.transform.b, grid.transform.e)
    bounds = (xmin - dx, ymin - dy, xmax + dx, ymax + dy)
    left, bottom, right, top = grid.bounds
    if bounds[2] <= left or bounds[0] >= right or bounds[3] <= bottom or bounds[1] >= top:
        raise InputError(
            f"The training area {source.aoi.name if source.aoi else ''} does not overlap the "
            f"raster {source.rgb.name}; check both layers' CRS and extent."
        )
    return bounds


def _automatic_split(
    area: np.ndarray, val_fraction: float, seed: int, source: TrainingSource
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Train and validation masks from a band of the training area's pixel bounding box.

    A training area of separate parts (e.g. the cells ``ternaus where-to-label`` proposed) whose
    band falls between them gets a band of its largest part instead; the other parts train.
    Returns ``(train_split, val_split, (row0, col0, row1, col1))`` where the last is the band's
    pixel box; the masks are not yet restricted to ``area``.
    """
    train_split, val_split, band = _split_in_box(area, val_fraction, seed, source)
    if (val_split & area).any():
        return train_split, val_split, band
    parts, count = ndimage.label(area)
    if count < 2:
        return train_split, val_split, band
    sizes = ndimage.sum(area, parts, range(1, count + 1))
    largest = parts == int(np.argmax(sizes)) + 1
    inside, val_split, band = _split_in_box(largest, val_fraction, seed, source)
    rows, cols = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
    outside = np.ones(area.shape, dtype=bool)
    outside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = False
    near_val = ndimage.binary_dilation(val_split, iterations=VAL_GAP_PX)
    return inside | (outside & ~near_val), val_split, band


def _split_in_box(
    area: np.ndarray, val_fraction: float, seed: int, source: TrainingSource
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """:func:`_automatic_split` on the pixel bounding box of ``area``."""
    rows = np.flatnonzero(area.any(axis=1))
    cols = np.flatnonzero(area.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    try:
        sub_train, sub_val = split_by_area(
            (r1 - r0, c1 - c0), val_fraction, seed, gap_px=VAL_GAP_PX
        )
    except InputError as exc:
        where = (
            f"training area {source.aoi.name}"
            if source.aoi is not None
            else "valid part of the raster"
        )
        raise InputError(
            f"The {where} of {source.rgb.name} is only {c1 - c0}x{r1 - r0} px, too small to "
            "split automatically into training and validation areas; draw a larger training "
            "area or give a validation area (--val-aoi).",
            details=exc.message,
        ) from exc
    train_split = np.zeros(area.shape, dtype=bool)
    val_split = np.zeros(area.shape, dtype=bool)
    train_split[r0:r1, c0:c1] = sub_train
    val_split[r0:r1, c0:c1] = sub_val
    vrows = np.flatnonzero(sub_val.any(axis=1))
    vcols = np.flatnonzero(sub_val.any(axis=0))
    band = (
        r0 + int(vrows[0]),
        c0 + int(vcols[0]),
        r0 + int(vrows[-1]) + 1,
        c0 + int(vcols[-1]) + 1,
    )
    return train_split, val_split, band


def prepare_source(
    source: TrainingSource,
    normalization: Normalization,
    *,
    index: int = 0,
    val_fraction: float = 0.2,
    seed: int = 0,
    border_width_px: int = 3,
    allow_empty_labels: bool = False,
    margin_px: int = 256,
    resolution_m: float | None = None,
    context_px: int = 0,
) -> PreparedSource:
    """Read one source into memory: normalised image, targets, training weights, validation area.

    ``context_px`` > 0: also read the unlabelled imagery around the training area, up to a
    square of that many pixels centred on it, and mark it in ``context_mask`` for
    self-training (:mod:`.pseudo`). A source without labels is all context: its area (``aoi``:
    the imagery to adapt to), else a square of ``context_px`` at the raster's centre.

    ``resolution_m``: the ground resolution to read at (the model's; ``None``: the raster's own).
    With a training area only its bounding box (with the validation area's) plus ``margin_px``
    pixels (use the crop size) is read; the grid of the result is that cropped grid. Raises
    ``InputError`` for unreadable or too large rasters and areas that miss the raster, and
    ``LabelError`` when the labels hold no building inside the training area (unless
    ``allow_empty_labels``: the area is then a negative example, all background).
    """
    aoi_polygons = val_polygons = None
    bbox: Bounds | None = None
    labelled = source.labels is not None
    if source.aoi is not None or (context_px > 0 and not labelled):
        with RasterInputs.open(
            source.rgb, source.ms, resolution_m=resolution_m, assume_crs=source.assume_crs
        ) as full:
            crs, full_grid = full.grid.crs, full.grid
        if source.aoi is not None:
            aoi_polygons = _read_area_polygons(source.aoi, crs, "training area")
            if source.val_aoi is not None and labelled:
                val_polygons = _read_area_polygons(source.val_aoi, crs, "validation area")
            bbox = _read_bbox(
                source, full_grid, [*aoi_polygons, *(val_polygons or [])], max(0, margin_px)
            )
        if context_px > 0 and labelled and bbox is not None:
            bbox = _context_bbox(full_grid, bbox, context_px)  # the imagery around the labels
        elif context_px > 0 and bbox is None:
            bbox = _context_bbox(full_grid, None, context_px)  # no area: the raster's centre

    with (
        raster_env(),
        RasterInputs.open(
            source.rgb,
            source.ms,
            bbox=bbox,
            resolution_m=resolution_m,
            assume_crs=source.assume_crs,
        ) as inputs,
    ):
        grid = inputs.grid
        height, width = grid.height, grid.width
        if height * width > MAX_TRAIN_PIXELS:
            side = int(math.sqrt(MAX_TRAIN_PIXELS))
            if source.aoi is not None:
                what = (
                    f"The training area {source.aoi.name} (with the validation area and a "
                    f"margin of {margin_px} px) covers {width}x{height} px of "
                    f"{source.rgb.name}"
                )
                fix = (
                    "Draw a smaller training area (or several sources, each with its own "
                    "area), or use a smaller crop size."
                )
            else:
                what = f"The training raster {source.rgb.name} is {width}x{height} px"
                fix = (
                    "Draw a training area (--aoi) around the labelled part, or clip the raster "
                    "to it."
                )
            raise InputError(
                f"{what}; training holds its rasters in memory and takes at most about "
                f"{side}x{side} px. {fix}"
            )
        normalizer = Normalizer.fit(normalization, inputs)  # whole-raster statistics
        resampled = inputs.resampled
        window = Window(0, 0, width, height)
        raw, valid = inputs.read_masked(window)  # NaN and +/-inf pixels are nodata
        image = normalizer(raw)
    image[:, ~valid] = 0.0
    shape = (height, width)
    extent = _pixel_box(grid.transform, 0, 0, height, width)

    if labelled:
        polygons = read_polygons(source.labels, dst_crs=grid.crs, error_cls=LabelError)
        polygons = [p for p in polygons if p.intersects(extent)]
    else:
        polygons = []
    targets = make_targets(polygons, grid.transform, shape, border_width_px)
    target = np.stack([targets.body, targets.border])

    if not labelled:  # an area without labels is the imagery to adapt to
        if aoi_polygons is not None:
            valid = valid & _area_mask(aoi_polygons, grid.transform, shape)[0]
        return _unlabelled_source(source, grid, image, target, valid, resampled)
    if source.aoi is not None:
        area, area_region = _area_mask(aoi_polygons, grid.transform, shape)
        if not area.any():
            raise InputError(
                f"The training area {source.aoi.name} does not overlap the raster "
                f"{source.rgb.name}; check both layers' CRS and extent."
            )
    else:
        area, area_region = np.ones(shape, dtype=bool), extent
    area &= valid
    if not area.any():
        where = f"training area {source.aoi.name}" if source.aoi else "raster"
        raise InputError(
            f"The {where} of {source.rgb.name} holds no valid pixel (all nodata); train on a "
            "part of the raster that holds imagery."
        )

    labelled_px = int(targets.body[area].sum())
    if labelled_px == 0 and not allow_empty_labels:
        where = f"its training area {source.aoi.name}" if source.aoi else "the raster extent"
        raise LabelError(
            f"The labels {source.labels.name} hold no building inside {where} of "
            f"{source.rgb.name}. Draw footprints there, check the label layer's CRS, or mark "
            "the area as building-free on purpose (--allow-empty-labels)."
        )

    if source.val_aoi is not None:
        if val_polygons is None:
            val_polygons = _read_area_polygons(source.val_aoi, grid.crs, "validation area")
        val_area, val_region = _area_mask(val_polygons, grid.transform, shape)
        val = val_area & valid
        near_val = ndimage.binary_dilation(val, iterations=VAL_GAP_PX) if val.any() else val
        train = area & ~near_val
        if not val.any():
            val_region = None
    else:
        train_split, val_split, band_px = _automatic_split(area, val_fraction, seed + index, source)
        val = val_split & area
        train = train_split & area
        near_val = ndimage.binary_dilation(val, iterations=VAL_GAP_PX) if val.any() else val
        band = _pixel_box(grid.transform, *band_px)
        val_region = band.intersection(area_region) if val.any() else None
    if not train.any():
        raise InputError(
            f"No training pixels are left in {source.rgb.name} once the validation area is taken "
            "out; give a larger training area or a validation area elsewhere."
        )
    return PreparedSource(
        source=source,
        grid=grid,
        image=image,
        target=target,
        train_weight=train.astype(np.float32),
        val_mask=val,
        val_region=val_region,
        label_polygons=polygons,
        band_names=input_band_names(source.rgb, source.ms),
        resolution_m=float(grid.pixel_size_m),
        positive_train_px=int(targets.body[train].sum()),
        labelled_px=labelled_px,
        resampled=resampled,
        context_mask=(valid & ~area & ~near_val) if context_px > 0 and source.aoi else None,
        label_region=area_region if val_region is None else area_region.union(val_region),
    )


def _context_bbox(grid: GridInfo, bbox: Bounds | None, context_px: int) -> Bounds:
    """``bbox`` grown to a square of ``context_px`` pixels of ``grid`` around its centre (the
    raster's centre without one), clipped to the raster; never smaller than ``bbox``."""
    left, bottom, right, top = grid.bounds
    xmin, ymin, xmax, ymax = bbox or grid.bounds
    half = context_px * abs(grid.transform.a) / 2
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    return (
        max(left, min(xmin, cx - half)),
        max(bottom, min(ymin, cy - half)),
        min(right, max(xmax, cx + half)),
        min(top, max(ymax, cy + half)),
    )


def _unlabelled_source(
    source: TrainingSource,
    grid: GridInfo,
    image: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    resampled: bool,
) -> PreparedSource:
    """A source without labels: every valid pixel is context for self-training."""
    if not valid.any():
        raise InputError(
            f"The raster {source.rgb.name} holds no valid pixel (all nodata) where it was read; "
            "adapt to a part of the raster that holds imagery."
        )
    return PreparedSource(
        source=source,
        grid=grid,
        image=image,
        target=target,
        train_weight=np.zeros(valid.shape, np.float32),
        val_mask=np.zeros(valid.shape, bool),
        val_region=None,
        label_polygons=[],
        band_names=input_band_names(source.rgb, source.ms),
        resolution_m=float(grid.pixel_size_m),
        resampled=resampled,
        context_mask=valid.copy(),
    )


def prepare_sources(
    sources: Sequence[TrainingSource],
    normalization: Normalization,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    border_width_px: int = 3,
    allow_empty_labels: bool = False,
    margin_px: int = 256,
    resolution_m: float | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    context_px: int = 0,
) -> list[PreparedSource]:
    """Prepare every source and check they fit together (same bands, some labels, validation).

    Every source is read at ``resolution_m`` (see :func:`prepare_source`).
    ``cancel`` is checked before each source (``CancelledError``).
    """
    if not sources:
        raise InputError("Give at least one training raster (--rgb) with its labels (--labels).")
    prepared: list[PreparedSource] = []
    for index, source in enumerate(sources):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(ProgressEvent("prepare", index, len(sources), {"source": source.rgb.name}))
        prepared.append(
            prepare_source(
                source,
                normalization,
                index=index,
                val_fraction=val_fraction,
                seed=seed,
                border_width_px=border_width_px,
                allow_empty_labels=allow_empty_labels,
                margin_px=margin_px,
                resolution_m=resolution_m,
                context_px=context_px,
            )
        )
    if cancel is not None:
        cancel.raise_if_cancelled()
    progress(ProgressEvent("prepare", len(sources), len(sources), {}))
    bands = {tuple(p.band_names) for p in prepared}
    if len({p.image.shape[0] for p in prepared}) > 1 or len(bands) > 1:
        raise InputError(
            "The training rasters have different bands "
            f"({'; '.join(', '.join(b) for b in sorted(bands))}); train on rasters of one sensor "
            "setup (all RGB, or all RGB + the same multispectral bands)."
        )
    if all(s.labels is None for s in sources):
        return prepared  # self-training alone: no labels, no validation
    if not any(p.positive_train_px for p in prepared):
        raise LabelError(
            "No building label falls inside the training area of any raster (outside the "
            "validation area); draw footprints in the training area or check the labels' CRS."
        )
    if not any(p.has_validation for p in prepared):
        raise InputError(_no_validation_message(sources))
    return prepared


def native_resolution_m(sources: Sequence[TrainingSource]) -> float:
    """The median ground pixel size (metres) of the sources' RGB rasters, at their own pixels:
    the resolution of a new model when none is asked for."""
    sizes = []
    for source in sources:
        with RasterInputs.open(source.rgb, source.ms, assume_crs=source.assume_crs) as inputs:
            sizes.append(inputs.grid.pixel_size_m)
    return round(float(np.median(sizes)), 4)


def _no_validation_message(sources: Sequence[TrainingSource]) -> str:
    """Why no source has validation pixels, and what to do, for given and automatic areas."""
    given = [s for s in sources if s.val_aoi is not None]
    automatic = [s for s in sources if s.val_aoi is None]
    parts = []
    if given:
        names = ", ".join(sorted({s.val_aoi.name for s in given}))  # type: ignore[union-attr]
        parts.append(
            f"The validation area (--val-aoi {names}) does not overlap the valid imagery of its "
            "training raster; draw it over a labelled part of the imagery, or leave it out for "
            "an automatic split."
        )
    if automatic:
        names = ", ".join(s.rgb.name for s in automatic)
        parts.append(
            f"The automatic validation split (a band of each training area) holds no valid "
            f"pixel of the training area in {names}; draw a validation area (--val-aoi) over a "
            "labelled part of the imagery, or draw a more compact training area (--aoi)."
        )
    return " ".join(parts)


# -- crops ---------------------------------------------------------------------------------


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Reflect indices into [0, size) (edge pixel not repeated), for any offset."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * size - 2
    m = np.mod(index, period)
    return np.where(m >= size, period - m, m)


def read_window(
    source: PreparedSource, row0: int, col0: int, height: int, width: int, weight: np.ndarray
) -> Sample:
    """A window of the source, reflect-padded where it leaves the grid (weight 0 there)."""
    rows = np.arange(row0, row0 + height)
    cols = np.arange(col0, col0 + width)
    h, w = source.image.shape[-2:]
    inside_r = (rows >= 0) & (rows < h)
    inside_c = (cols >= 0) & (cols < w)
    if inside_r.all() and inside_c.all():
        sl = (slice(row0, row0 + height), slice(col0, col0 + width))
        return Sample(
            source.image[(slice(None), *sl)].copy(),
            source.target[(slice(None), *sl)].copy(),
            weight[sl].astype(np.float32),
        )
    rr, cc = np.ix_(_reflect(rows, h), _reflect(cols, w))
    pad_weight = weight[rr, cc].astype(np.float32)
    pad_weight *= np.outer(inside_r, inside_c)
    return Sample(source.image[:, rr, cc], source.target[:, rr, cc], pad_weight)


def _subsample(indices: np.ndarray, seed: int) -> np.ndarray:
    if indices.size <= _MAX_CANDIDATES:
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, _MAX_CANDIDATES, replace=False))


@dataclass
class _Candidates:
    positive: np.ndarray  # flat indices of training pixels with a building target
    any: np.ndarray  # flat indices of training pixels


def _candidates(mask: np.ndarray, target: np.ndarray, seed: int) -> _Candidates:
    return _Candidates(
        _subsample(np.flatnonzero(mask & (target[0] > 0)), seed),
        _subsample(np.flatnonzero(mask), seed),
    )


class CropDataset(torch.utils.data.Dataset):
    """``length`` random training crops per epoch, reproducible from (seed, epoch, index).

    A crop is centred near a building pixel with probability ``positive_fraction``, else near
    any training pixel; sources are drawn in proportion to their training pixels. With
    self-training targets (``PreparedSource.pseudo_mask``) a crop comes from the pseudo-labelled
    pixels with probability ``pseudo_share`` (always when no source has labelled pixels), else
    from the user's labelled pixels.
    With scaling, a window of ``crop / scale`` px is read and resized to ``crop_px``. Items are
    dicts of tensors: ``image`` (C, crop, crop), ``target`` (2, crop, crop), ``weight``
    (crop, crop). Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        sources: Sequence[PreparedSource],
        crop_px: int,
        length: int,
        seed: int = 0,
        augment_config: AugmentConfig | None = None,
        positive_fraction: float = 0.7,
        pseudo_share: float = 0.5,
    ) -> None:
        if crop_px < 32 or crop_px % 32:
            raise InputError(f"The crop size must be a multiple of 32 (e.g. 256), got {crop_px}.")
        self.sources = list(sources)
        self.crop_px = crop_px
        self.length = length
        self.seed = seed
        self.augment_config = augment_config or AugmentConfig()
        self.positive_fraction = positive_fraction
        self.epoch = 0
        labelled = [(s.train_weight > 0) & ~s.pseudo_mask for s in self.sources]
        self._candidates = [
            _candidates(mask, s.target, seed + i)
            for i, (s, mask) in enumerate(zip(self.sources, labelled, strict=True))
        ]
        self._pseudo = [
            _candidates(s.pseudo_mask & (s.train_weight > 0), s.target, seed + i)
            for i, s in enumerate(self.sources)
        ]
        self._source_p = _shares(self._candidates)
        self._pseudo_p = _shares(self._pseudo)
        if self._source_p is None and self._pseudo_p is None:
            raise InputError("No training pixels: give labels or imagery to adapt to.")
        self.pseudo_share = pseudo_share if self._pseudo_p is not None else 0.0
        if self._source_p is None:
            self.pseudo_share = 1.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def sample(self, rng: np.random.Generator) -> Sample:
        """One augmented crop drawn with ``rng``."""
        pools, shares = self._pools(rng)
        k = int(rng.choice(len(self.sources), p=shares))
        source, cand = self.sources[k], pools[k]
        positive = cand.positive.size > 0 and rng.random() < self.positive_fraction
        pool = cand.positive if positive else cand.any
        flat = int(pool[rng.integers(0, pool.size)])
        height, width = source.image.shape[-2:]
        row, col = divmod(flat, width)
        cfg = self.augment_config
        scale = random_scale_factor(rng, cfg.scale_min, cfg.scale_max) if cfg.scales else 1.0
        src = max(8, int(round(self.crop_px / scale)))
        row0 = _place(row, src, height, rng)
        col0 = _place(col, src, width, rng)
        sample = read_window(source, row0, col0, src, src, source.train_weight)
        sample = resize_sample(sample, (self.crop_px, self.crop_px))
        return augment(sample, rng, cfg)

    def _pools(self, rng: np.random.Generator) -> tuple[list[_Candidates], np.ndarray]:
        """The pixels a crop is drawn from: self-training ones with probability
        ``pseudo_share``, else the user's labelled ones (and each source's share)."""
        if self.pseudo_share >= 1.0 or (self.pseudo_share > 0 and rng.random() < self.pseudo_share):
            return self._pseudo, self._pseudo_p
        return self._candidates, self._source_p

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = self.sample(rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(sample.target, dtype=np.float32)),
            "weight": torch.from_numpy(np.ascontiguousarray(sample.weight, dtype=np.float32)),
        }


def _shares(pools: Sequence[_Candidates]) -> np.ndarray | None:
    """Each source's share of the draws (by its pixel count); ``None`` when all are empty."""
    counts = np.array([c.any.size for c in pools], dtype=np.float64)
    return counts / counts.sum() if counts.sum() > 0 else None


def _place(center: int, size: int, length: int, rng: np.random.Generator) -> int:
    """Start of a ``size`` window holding ``center``, inside [0, length) whenever it fits."""
    start = center - int(rng.integers(0, size))
    low, high = min(0, length - size), max(0, length - size)
    return int(np.clip(start, low, high))


# -- validation tiles -----------------------------------------------------------------------


@dataclass
class ValTile:
    """A validation window (reflect-padded) with the validation mask as weight."""

    sample: Sample
    row0: int
    col0: int


def val_tiles(source: PreparedSource, tile_px: int) -> Iterator[ValTile]:
    """Tiles of ``tile_px`` (a multiple of 32) covering the validation pixels of a source."""
    if not source.val_mask.any():
        return
    rows = np.flatnonzero(source.val_mask.any(axis=1))
    cols = np.flatnonzero(source.val_mask.any(axis=0))
    weight = source.val_mask.astype(np.float32)
    for row0 in range(int(rows[0]), int(rows[-1]) + 1, tile_px):
        for col0 in range(int(cols[0]), int(cols[-1]) + 1, tile_px):
            sample = read_window(source, row0, col0, tile_px, tile_px, weight)
            if sample.weight.any():
                yield ValTile(sample, row0, col0)


def describe_sources(sources: Sequence[PreparedSource]) -> str:
    """A JSON list of the sources' file paths (for model provenance)."""
    return json.dumps(
        [{k: str(v) for k, v in p.source.model_dump().items() if v is not None} for p in sources]
    )
