"""Models side by side on real imagery they were not trained on: one table, per evaluation area.

Every model runs through the real extraction (:func:`ternaus_backend.pipeline.extract.extract`,
as ``ternaus predict`` does, so rasters are resampled to each model's resolution). Areas:

* ``oam``: the validation areas of the OpenAerialMap mosaics (zanzibar, kampala, banepa_east,
  nairobi in ``../shared/data/hotosm_oam``): ``resources/training/<area>_val.geojson`` (written by
  ``scripts/make_val_areas.py``), truth ``<area>_buildings.geojson``. Each model predicts on the
  bounding box of the validation area; predictions and truth are clipped to the area.
* ``banepa``: the Banepa chips kept out of training (:func:`banepa_val_chips`: the easternmost
  columns of chips), mosaicked on their web-map tile grid, truth ``banepa_buildings.geojson``.
* ``rio``: the SpaceNet-1 Rio tiles held out of the previous default model's training, img56,
  img57 (buildings) and img61, img62 (building-free), truth: the connected components of the
  SpaceNet masks (touching buildings merged, so building F1 there is only indicative); and the
  false positives on the building-free tiles, the held-out img61/img62 and img58-60 (which were
  negatives in the previous default model's training data).

Metrics per area: pixel IoU of the building masks (both rasterised on the raster's grid, inside
the area), building F1 by the SpaceNet rules (IoU > 0.5, :mod:`ternaus_backend.evaluation.spacenet`,
in metres of the local UTM zone, polygons under 1 m² after clipping ignored), predicted vs true
building counts, and false positives (any building) on building-free tiles. Pooled rows sum the
counts (pixels, TP/FP/FN) of their areas.

    .venv/bin/python scripts/eval_real.py --model previous=old.safetensors \\
        --model new=resources/models/default.safetensors [--tta] [--native-resolution] \\
        [--areas oam banepa rio] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import CRS
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import from_bounds as window_from_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ternaus_backend.evaluation.spacenet import MatchResult, Scores, match
from ternaus_backend.models.model_file import load_model
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.training.validation import clip_to
from ternaus_backend.vector_io import (
    read_polygons,
    read_polygons_with_properties,
    reproject_geometries,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
VAL_AREAS = REPO / "resources" / "training"
DEFAULT_MODEL = REPO / "resources" / "models" / "default.safetensors"

OAM_AREAS = ("zanzibar", "kampala", "banepa_east", "nairobi")
RIO_ID = "013022223130_Public_img"
RIO_HELD_OUT = (56, 57, 61, 62)
RIO_EMPTY_HELD_OUT = (61, 62)
RIO_EMPTY_TRAINED = (58, 59, 60)
RIO_TRAINED = (50, 51, 52, 53, 54, 55)
#: Share of the Banepa chips (whole columns, easternmost first) kept for validation.
BANEPA_VAL_SHARE = 0.25
#: Polygons smaller than this after clipping to an area are ignored (square metres).
MIN_AREA_M2 = 1.0
#: Web-map (EPSG:3857) half circumference in metres.
_WEB_MERCATOR_HALF = 20037508.342789244
_CHIP_NAME = re.compile(r"OAM-(\d+)-(\d+)-(\d+)\.tif$")


# -- Banepa chips ---------------------------------------------------------------------------


def chip_tile(path: str | Path) -> tuple[int, int, int]:
    """The web-map tile (x, y, zoom) of a chip named ``OAM-<x>-<y>-<zoom>.tif``."""
    match = _CHIP_NAME.search(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named OAM-<x>-<y>-<zoom>.tif")
    x, y, z = (int(v) for v in match.groups())
    return x, y, z


def tile_bounds(x: int, y: int, zoom: int) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of an XYZ web-map tile in EPSG:3857 metres."""
    size = 2 * _WEB_MERCATOR_HALF / 2**zoom
    xmin = -_WEB_MERCATOR_HALF + x * size
    ymax = _WEB_MERCATOR_HALF - y * size
    return xmin, ymax - size, xmin + size, ymax


def banepa_chips(folder: str | Path | None = None) -> list[Path]:
    """All Banepa chips, sorted by name."""
    folder = Path(folder) if folder is not None else DATA / "hotosm_oam" / "banepa_chips"
    return sorted(p for p in folder.glob("OAM-*.tif") if _CHIP_NAME.search(p.name))


def banepa_val_chips(
    folder: str | Path | None = None, share: float = BANEPA_VAL_SHARE
) -> list[Path]:
    """The Banepa chips kept out of training for validation.

    Whole columns of chips, the easternmost (largest tile x index) first, until they hold at
    least ``share`` of the chips: with the 48 chips (x 386690..386695, 8 chips each) that is
    x = 386694 and 386695, 16 chips. A spatial block, never random chips.
    """
    chips = banepa_chips(folder)
    if not chips:
        return []
    columns: dict[int, list[Path]] = {}
    for chip in chips:
        columns.setdefault(chip_tile(chip)[0], []).append(chip)
    kept: list[Path] = []
    for x in sorted(columns, reverse=True):
        if len(kept) >= share * len(chips):
            break
        kept.extend(columns[x])
    return sorted(kept)


def banepa_train_chips(folder: str | Path | None = None) -> list[Path]:
    """The Banepa chips left for training (all but :func:`banepa_val_chips`)."""
    val = set(banepa_val_chips(folder))
    return [c for c in banepa_chips(folder) if c not in val]


def _read_chip(chip: str | Path) -> np.ndarray:
    """The chip's pixels (bands, rows, cols); the chips are JPEG files without georeferencing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(chip) as src:
            return src.read()


def write_georeferenced_chip(chip: str | Path, out: str | Path) -> Path:
    """The chip as a GeoTIFF on its web-map tile (EPSG:3857); the chips carry no georeferencing."""
    x, y, z = chip_tile(chip)
    data = _read_chip(chip)
    _, height, width = data.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:3857",
        transform=from_bounds(*tile_bounds(x, y, z), width, height),
    )
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return Path(out)


def write_chip_mosaic(chips: Sequence[Path], out: str | Path) -> tuple[Path, BaseGeometry]:
    """The chips mosaicked on their tile grid (EPSG:3857, a mask band where no chip lies), and
    the union of their footprints."""
    tiles = [chip_tile(c) for c in chips]
    zooms = {t[2] for t in tiles}
    if len(zooms) != 1:
        raise ValueError("chips of several zoom levels cannot be mosaicked")
    zoom = zooms.pop()
    first = _read_chip(chips[0])
    count, side, dtype = first.shape[0], first.shape[2], first.dtype
    xs, ys = [t[0] for t in tiles], [t[1] for t in tiles]
    x0, y0 = min(xs), min(ys)
    width, height = (max(xs) - x0 + 1) * side, (max(ys) - y0 + 1) * side
    left, _, _, top = tile_bounds(x0, y0, zoom)
    _, bottom, right, _ = tile_bounds(max(xs), max(ys), zoom)
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=dtype,
        crs="EPSG:3857",
        transform=from_bounds(left, bottom, right, top, width, height),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    footprints = []
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(out, "w", **profile) as dst:
        mask = np.zeros((height, width), np.uint8)
        for chip, (x, y, _) in zip(chips, tiles, strict=True):
            data = _read_chip(chip)
            window = Window((x - x0) * side, (y - y0) * side, side, side)
            dst.write(data, window=window)
            mask[(y - y0) * side : (y - y0 + 1) * side, (x - x0) * side : (x - x0 + 1) * side] = 255
            footprints.append(box(*tile_bounds(x, y, zoom)))
        dst.write_mask(mask)
    return Path(out), shapely.union_all(footprints)


# -- areas ----------------------------------------------------------------------------------


@dataclass
class Area:
    """One evaluation area: a raster, its truth and the region scored (both in the raster CRS)."""

    name: str
    raster: Path
    truth: list[BaseGeometry]
    region: BaseGeometry
    crs: Any
    building_free: bool = False


@dataclass
class Counts:
    """What one model did on one area (or, summed, on several)."""

    inter_px: int = 0
    union_px: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    predicted: int = 0
    true: int = 0
    seconds: float = 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple:
        return (
            self.inter_px,
            self.union_px,
            self.tp,
            self.fp,
            self.fn,
            self.predicted,
            self.true,
            self.seconds,
        )

    @property
    def pixel_iou(self) -> float:
        return self.inter_px / self.union_px if self.union_px else 1.0

    @property
    def scores(self) -> Scores:
        return Scores(self.tp, self.fp, self.fn)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pixel_iou": round(self.pixel_iou, 4),
            **{
                k: round(v, 4) if isinstance(v, float) else v
                for k, v in self.scores.to_dict().items()
            },
            "predicted": self.predicted,
            "true": self.true,
            "inter_px": self.inter_px,
            "union_px": self.union_px,
            "seconds": round(self.seconds, 1),
        }


def _raster_crs(path: Path) -> Any:
    with rasterio.open(path) as ds:
        return ds.crs


def oam_areas(data: Path = DATA, val_dir: Path = VAL_AREAS) -> list[Area]:
    """The validation areas of the four OAM mosaics."""
    areas = []
    folder = data / "hotosm_oam"
    for name in OAM_AREAS:
        raster, truth = folder / f"{name}_rgb.tif", folder / f"{name}_buildings.geojson"
        val = val_dir / f"{name}_val.geojson"
        if not raster.exists():
            print(f"note: {raster} not found; area {name} left out", file=sys.stderr)
            continue
        if not val.exists():
            raise SystemExit(
                f"{val} not found: write the validation areas first "
                "(.venv/bin/python scripts/make_val_areas.py)"
            )
        crs = _raster_crs(raster)
        region = shapely.union_all(read_polygons(val, dst_crs=crs))
        areas.append(Area(f"oam:{name}", raster, read_polygons(truth, dst_crs=crs), region, crs))
    return areas


def banepa_area(work: Path, data: Path = DATA) -> list[Area]:
    """The Banepa validation chips as one mosaic."""
    folder = data / "hotosm_oam"
    chips = banepa_val_chips(folder / "banepa_chips")
    if not chips:
        print(f"note: no Banepa chips in {folder}; left out", file=sys.stderr)
        return []
    raster, region = write_chip_mosaic(chips, work / "banepa_val_mosaic.tif")
    truth = read_polygons(folder / "banepa_buildings.geojson", dst_crs="EPSG:3857")
    return [Area("banepa_chips:val", raster, truth, region, "EPSG:3857")]


def rio_areas(data: Path = DATA) -> list[Area]:
    """The held-out Rio tiles and the building-free ones."""
    folder = data / "spacenet1_rio"
    if not folder.exists():
        print(f"note: {folder} not found; Rio left out", file=sys.stderr)
        return []
    areas = []
    for number in sorted(set(RIO_HELD_OUT) | set(RIO_EMPTY_TRAINED)):
        raster = folder / "images" / f"3band_{RIO_ID}{number}.tif"
        truth_path = folder / "derived_polygons" / f"{RIO_ID}{number}_mask_components.geojson"
        with rasterio.open(raster) as ds:
            crs, bounds = ds.crs, ds.bounds
        truth = read_polygons(truth_path, dst_crs=crs)
        areas.append(
            Area(f"rio:img{number}", raster, truth, box(*bounds), crs, building_free=not truth)
        )
    return areas


def training_areas(work: Path, data: Path = DATA, val_dir: Path = VAL_AREAS) -> list[Area]:
    """Where the default model was trained, for tuning its thresholds (never the held-out
    areas): each OAM mosaic's AOI minus its validation area, the Banepa training chips, and the
    Rio tiles img50-55 with buildings."""
    areas = []
    folder = data / "hotosm_oam"
    for name in OAM_AREAS:
        raster, truth = folder / f"{name}_rgb.tif", folder / f"{name}_buildings.geojson"
        if not raster.exists():
            continue
        with rasterio.open(raster) as ds:
            crs, bounds = ds.crs, ds.bounds
        aoi = shapely.union_all(read_polygons(folder / f"{name}_aoi.geojson", dst_crs=crs))
        val = shapely.union_all(read_polygons(val_dir / f"{name}_val.geojson", dst_crs=crs))
        region = aoi.intersection(box(*bounds)).difference(val)
        truth_polys = read_polygons(truth, dst_crs=crs)
        areas.append(Area(f"oam-train:{name}", raster, truth_polys, region, crs))
    chips = banepa_train_chips(folder / "banepa_chips")
    if chips:
        raster, region = write_chip_mosaic(chips, work / "banepa_train_mosaic.tif")
        truth_polys = read_polygons(folder / "banepa_buildings.geojson", dst_crs="EPSG:3857")
        areas.append(Area("banepa_chips:train", raster, truth_polys, region, "EPSG:3857"))
    rio = data / "spacenet1_rio"
    for number in RIO_TRAINED if rio.exists() else ():
        raster = rio / "images" / f"3band_{RIO_ID}{number}.tif"
        truth_path = rio / "derived_polygons" / f"{RIO_ID}{number}_mask_components.geojson"
        with rasterio.open(raster) as ds:
            crs, bounds = ds.crs, ds.bounds
        truth_polys = read_polygons(truth_path, dst_crs=crs)
        areas.append(Area(f"rio-train:img{number}", raster, truth_polys, box(*bounds), crs))
    return areas


# -- scoring --------------------------------------------------------------------------------


def local_utm(area: Area) -> CRS:
    """The UTM zone of the area's centre (metres for areas, any IoU)."""
    lon0, lat0, lon1, lat1 = transform_bounds(area.crs, "EPSG:4326", *area.region.bounds)
    lon, lat = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    infos = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    return CRS.from_epsg(int(infos[0].code))


def pixel_counts(
    area: Area, predicted: Sequence[BaseGeometry], truth: Sequence[BaseGeometry]
) -> tuple[int, int]:
    """Intersection and union (pixels of the raster's grid inside the region) of the masks."""
    with rasterio.open(area.raster) as ds:
        exact = window_from_bounds(*area.region.bounds, transform=ds.transform)
        col0 = max(0, math.floor(exact.col_off + 1e-6))
        row0 = max(0, math.floor(exact.row_off + 1e-6))
        col1 = min(ds.width, math.ceil(exact.col_off + exact.width - 1e-6))
        row1 = min(ds.height, math.ceil(exact.row_off + exact.height - 1e-6))
        window = Window(col0, row0, col1 - col0, row1 - row0)
        transform = ds.window_transform(window)
    shape = (int(window.height), int(window.width))

    def mask(geoms: Sequence[BaseGeometry]) -> np.ndarray:
        geoms = [g for g in geoms if not g.is_empty]
        if not geoms:
            return np.zeros(shape, bool)
        return rasterize(geoms, out_shape=shape, transform=transform).astype(bool)

    inside = mask([area.region])
    pred, true = mask(predicted) & inside, mask(truth) & inside
    return int((pred & true).sum()), int((pred | true).sum())


def result_path(area: Area, work: Path) -> Path:
    """Where :func:`evaluate` writes its extraction of ``area`` in ``work``."""
    return work / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', area.name)}.gpkg"


def evaluate(
    area: Area,
    model: Any,
    tta: bool,
    work: Path,
    device: str | None,
    native_resolution: bool = False,
    precision: str | None = None,
) -> Counts:
    """Extract with ``model`` over the area and score the result (kept at
    :func:`result_path`)."""
    out = result_path(area, work)
    started = time.perf_counter()
    result = extract(
        area.raster,
        out,
        model=model,
        bbox=area.region.bounds,
        options=ExtractOptions(
            tta=tta, device=device, native_resolution=native_resolution, precision=precision
        ),
    )
    seconds = time.perf_counter() - started
    predicted, props = read_polygons_with_properties(result.path) if result.count else ([], [])
    inter, union = pixel_counts(
        area,
        [p.intersection(area.region) for p in predicted if p.intersects(area.region)],
        [t.intersection(area.region) for t in area.truth if t.intersects(area.region)],
    )
    matched = match_buildings(area, predicted, props)
    scores = matched.result.scores
    return Counts(
        inter,
        union,
        scores.tp,
        scores.fp,
        scores.fn,
        len(matched.predicted),
        len(matched.truth),
        seconds,
    )


@dataclass
class Matched:
    """An area's predicted and true buildings (metres, clipped to the region) and their
    SpaceNet matching."""

    predicted: list[BaseGeometry]
    truth: list[BaseGeometry]
    result: MatchResult


def match_buildings(
    area: Area, predicted: Sequence[BaseGeometry], props: Sequence[dict]
) -> Matched:
    """Clip both layers to the region in the local UTM zone (pieces under
    :data:`MIN_AREA_M2` dropped) and match them by the SpaceNet rules, by confidence."""
    utm = local_utm(area)
    region_m = reproject_geometries([area.region], area.crs, utm)[0]
    pred_m, kept = clip_to(reproject_geometries(predicted, area.crs, utm), region_m, MIN_AREA_M2)
    truth_m, _ = clip_to(reproject_geometries(area.truth, area.crs, utm), region_m, MIN_AREA_M2)
    confidences = [float(props[k].get("confidence") or 0.0) for k in kept]
    return Matched(pred_m, truth_m, match(pred_m, truth_m, confidences=confidences))


def match_layer(area: Area, path: Path) -> Matched:
    """:func:`match_buildings` for a result file that :func:`evaluate` wrote."""
    predicted, props = read_polygons_with_properties(path) if Path(path).exists() else ([], [])
    return match_buildings(area, predicted, props)


@dataclass(frozen=True)
class Interval:
    """F1 of ``b`` minus F1 of ``a`` on one area, with its bootstrap interval."""

    delta: float
    low: float
    high: float
    #: Share of the bootstrap rounds in which ``b`` scored higher.
    b_wins: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in dataclasses.asdict(self).items()}


def cell_counts(matched: Matched, cell_of: Callable[[BaseGeometry], tuple]) -> dict[tuple, list]:
    """[tp, fp, fn] per cell: each prediction counts in its own cell, each missed building in
    its own."""
    counts: dict[tuple, list] = {}
    for k, geom in enumerate(matched.predicted):
        hit = matched.result.matched_truth[k] >= 0
        counts.setdefault(cell_of(geom), [0, 0, 0])[0 if hit else 1] += 1
    found = set(int(j) for j in matched.result.matched_truth if j >= 0)
    for j, geom in enumerate(matched.truth):
        if j not in found:
            counts.setdefault(cell_of(geom), [0, 0, 0])[2] += 1
    return counts


def paired_interval(
    a: Matched, b: Matched, cell_m: float = 50.0, rounds: int = 2000, seed: int = 0
) -> Interval:
    """How sure is a difference in building F1 between two results on the same area? Squares of
    ``cell_m`` metres are drawn with replacement (the same draw for both: a paired, spatial
    bootstrap; neighbouring buildings are not independent), F1 of each computed from the drawn
    cells' counts; the 2.5 and 97.5 percentiles of the difference."""

    def cell_of(geom: BaseGeometry) -> tuple:
        point = geom.representative_point()
        return (math.floor(point.x / cell_m), math.floor(point.y / cell_m))

    per_a, per_b = cell_counts(a, cell_of), cell_counts(b, cell_of)
    cells = sorted(set(per_a) | set(per_b))
    ca = np.array([per_a.get(c, [0, 0, 0]) for c in cells], float).reshape(-1, 3)
    cb = np.array([per_b.get(c, [0, 0, 0]) for c in cells], float).reshape(-1, 3)

    def f1(counts: np.ndarray) -> np.ndarray:
        tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
        total = 2 * tp + fp + fn
        return np.where(total > 0, 2 * tp / np.maximum(total, 1), 1.0)

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(cells), size=(rounds, len(cells))) if cells else np.zeros((0, 0))
    deltas = f1(cb[draws].sum(axis=1)) - f1(ca[draws].sum(axis=1)) if cells else np.zeros(1)
    low, high = np.percentile(deltas, [2.5, 97.5])
    delta = float(f1(cb.sum(axis=0)) - f1(ca.sum(axis=0)))
    return Interval(delta, float(low), float(high), float((deltas > 0).mean()))


# -- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    """A line of the table: one area, or several pooled."""

    label: str
    areas: list[str]
    building_free: bool = False
    results: dict[str, Counts] = field(default_factory=dict)


def table_rows(area_names: Sequence[str]) -> list[Row]:
    """Rows for the areas evaluated: each area, the pooled OAM areas, the Rio groups."""
    names = set(area_names)
    rows = [Row(n.replace("oam:", "OAM "), [n]) for n in area_names if n.startswith("oam:")]
    oam = [n for n in area_names if n.startswith("oam:")]
    if len(oam) > 1:
        rows.append(Row("OAM, all validation areas", oam))
    if "banepa_chips:val" in names:
        rows.append(Row("Banepa chips (validation columns)", ["banepa_chips:val"]))
    held = [f"rio:img{n}" for n in RIO_HELD_OUT if f"rio:img{n}" in names]
    if held:
        tiles = "/".join(n.split("img")[1] for n in held)
        rows.append(Row(f"Rio held out img{tiles}", held))
    empty = [f"rio:img{n}" for n in RIO_EMPTY_HELD_OUT if f"rio:img{n}" in names]
    if empty:
        rows.append(Row("Rio building-free img61/62 (held out)", empty, building_free=True))
    trained = [f"rio:img{n}" for n in RIO_EMPTY_TRAINED if f"rio:img{n}" in names]
    if trained:
        rows.append(Row("Rio building-free img58-60 (previous default's training)", trained, True))
    return rows


def markdown(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """One markdown table: a line per area and metric, a column per model."""
    lines = [
        "| area | metric | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        if row.building_free:
            metrics = [("false positives", lambda c: str(c.predicted))]
        else:
            metrics = [
                ("pixel IoU", lambda c: f"{c.pixel_iou:.3f}"),
                ("building F1", lambda c: f"{c.scores.f1:.3f}"),
                (
                    "precision / recall",
                    lambda c: f"{c.scores.precision:.2f} / {c.scores.recall:.2f}",
                ),
                ("buildings predicted / true", lambda c: f"{c.predicted} / {c.true}"),
            ]
        for i, (metric, fmt) in enumerate(metrics):
            cells = [fmt(row.results[c]) if c in row.results else "n/a" for c in columns]
            lines.append(
                f"| {row.label if i == 0 else ''} | {metric} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def parse_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--model takes NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        type=parse_model,
        metavar="NAME=PATH",
        help=f"a model to evaluate (repeat; default: default={DEFAULT_MODEL.relative_to(REPO)})",
    )
    parser.add_argument("--tta", action="store_true", help="also run each model with flip TTA")
    parser.add_argument(
        "--native-resolution",
        action="store_true",
        help="also run each model on the rasters' own pixels (no resampling), for comparison",
    )
    parser.add_argument(
        "--areas",
        nargs="+",
        choices=("oam", "banepa", "rio"),
        default=["oam", "banepa", "rio"],
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when present)")
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="network precision of every run (default auto, as ternaus predict)",
    )
    parser.add_argument("--work", type=Path, help="keep the predicted GeoPackages here")
    args = parser.parse_args(argv)
    models = dict(args.model or [("default", DEFAULT_MODEL)])
    for name, path in models.items():
        if not path.exists():
            raise SystemExit(f"model {name}: {path} does not exist")

    with tempfile.TemporaryDirectory(prefix="eval-real-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        areas: list[Area] = []
        if "oam" in args.areas:
            areas += oam_areas(args.data)
        if "banepa" in args.areas:
            areas += banepa_area(work, args.data)
        if "rio" in args.areas:
            areas += rio_areas(args.data)
        if not areas:
            raise SystemExit(f"no evaluation data found under {args.data}")
        runs = [(name, "") for name in models]
        if args.tta:
            runs += [(name, "tta") for name in models]
        if args.native_resolution:
            runs += [(name, "native") for name in models]
        results: dict[str, dict[str, Counts]] = {}
        for name, variant in runs:
            column = f"{name}+{variant}" if variant else name
            model = load_model(models[name], device=args.device or "cpu")
            folder = work / column
            folder.mkdir(exist_ok=True)
            for area in areas:
                counts = evaluate(
                    area,
                    model,
                    variant == "tta",
                    folder,
                    args.device,
                    variant == "native",
                    args.precision,
                )
                results.setdefault(area.name, {})[column] = counts
                print(
                    f"{column} {area.name}: IoU {counts.pixel_iou:.3f} F1 {counts.scores.f1:.3f} "
                    f"{counts.predicted}/{counts.true} ({counts.seconds:.0f} s)",
                    file=sys.stderr,
                )
    columns = [f"{n}+{v}" if v else n for n, v in runs]
    rows = table_rows([a.name for a in areas])
    for row in rows:
        for column in columns:
            parts = [results[a][column] for a in row.areas if column in results.get(a, {})]
            if parts:
                row.results[column] = sum(parts[1:], parts[0])
    print(markdown(rows, columns))
    if args.json:
        payload = {
            "models": {n: str(p) for n, p in models.items()},
            "rows": [
                {
                    "area": row.label,
                    "areas": row.areas,
                    "building_free": row.building_free,
                    "results": {c: r.as_dict() for c, r in row.results.items()},
                }
                for row in rows
            ],
            "areas": {a: {c: r.as_dict() for c, r in res.items()} for a, res in results.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
