"""Where to label next: a grid of cells over an image, ranked by how unsure the model is there,
as ``ternaus where-to-label``, ``POST /v1/jobs/where_to_label`` and ``ternaus:where_to_label``.

The model runs once over the extent with flip test-time augmentation (the extraction pipeline:
windows, blending, instances, polygons, calibrated confidence; :mod:`..pipeline.extract`), and the
stitched maps keep one more channel: where the four flips disagree. The extent is cut into square
cells of ``cell_m`` metres on the ground (aligned on the extent's top-left corner; cells at its
right and bottom edges are cut by it). Per cell, as shares of the *whole* cell's area (so a sliver
at the edge or a cell mostly outside the AOI or the image weighs less):

* ``near_threshold``: pixels whose flip-averaged body probability is near the model's body
  threshold ``t``: within :data:`NEAR_THRESHOLD_LOGIT` of ``logit(t)`` (for ``t`` = 0.8, a
  probability between 0.60 and 0.92): the model can hardly tell building from background;
* ``flip_disagreement``: pixels where the flips disagree: the body probability of some flips is
  at or above ``t`` and of others below: the answer depends on how the image is turned;
* ``low_confidence_share``: the area of the buildings of low confidence (the calibrated
  probability that the building is right, below :data:`LOW_CONFIDENCE`), each counted in the
  cell that holds its centroid (capped at 1): buildings found that are likely wrong.

``score = near_threshold + flip_disagreement + low_confidence_share`` (0 to 3): roughly the share
of the cell where the model is unsure, counted once per signal that says so. Cells are ranked by
score (``rank`` 1 the most uncertain: label it first); cells with no pixel of the image (or of the
AOI) are left out, and with ``exclude`` (what is already labelled, e.g. the training area) the
cells at least half inside it. Background the model is sure of scores 0; a cell of clear
buildings scores little (their outlines only); a cell of ambiguous roofs, or of buildings the
calibration doubts, scores high. Also per cell: ``buildings`` and ``low_confidence_buildings``
(counts, by centroid), ``mean_confidence`` of its buildings, ``covered`` (share of the cell
inside the image and AOI) and ``top`` (true for the ``top`` best-ranked cells, 3 by default).

The GeoPackage holds two layers in the raster's CRS: ``cells`` (ordered by rank) and
``buildings`` (the extraction's buildings, with ``confidence`` and ``area_m2``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.windows import Window
from shapely.geometry import box

from ternaus_backend.device import pick_device
from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.layer_matching import temporary_output, write_layer
from ternaus_backend.outputs import check_output
from ternaus_backend.pipeline.engine import plan_device
from ternaus_backend.pipeline.extract import (
    PolygonStage,
    check_bands,
    processing_inputs,
    resolve_model,
    scene_windows,
)
from ternaus_backend.pipeline.inference import flip_disagreement_network, predict_probabilities
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.options import ExtractOptions
from ternaus_backend.pipeline.polygons import BuildingWriter
from ternaus_backend.pipeline.preflight import check_temp_space, disk_free, estimate_extract
from ternaus_backend.pipeline.raster import Bounds, RasterInputs, raster_env
from ternaus_backend.pipeline.store import ProbabilityStore, byte_level
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from ternaus_backend.scratch import scratch_dir
from ternaus_backend.vector_io import read_features, read_polygons_with_properties

log = logging.getLogger(__name__)

#: How far (in logit) from the body threshold a probability counts as near it.
NEAR_THRESHOLD_LOGIT = 1.0
#: The smallest cell side, in pixels of the processing grid.
MIN_CELL_PX = 8
#: A building below this calibrated confidence is more likely wrong than right.
LOW_CONFIDENCE = 0.5
LAYERS = ("cells", "buildings")
CELL_FIELDS = {
    "rank": "int",
    "score": "float",
    "near_threshold": "float",
    "flip_disagreement": "float",
    "low_confidence_share": "float",
    "low_confidence_buildings": "int",
    "buildings": "int",
    "mean_confidence": "float",
    "covered": "float",
    "top": "bool",
}


@dataclass
class Cell:
    """One grid cell: its square (CRS) and what the model was unsure of there (module
    docstring)."""

    row: int
    col: int
    geometry: Any
    near_threshold: float
    flip_disagreement: float
    low_confidence_share: float
    low_confidence_buildings: int
    buildings: int
    mean_confidence: float | None
    covered: float
    rank: int = 0

    @property
    def score(self) -> float:
        return self.near_threshold + self.flip_disagreement + self.low_confidence_share

    def to_row(self, top: int) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(self.score, 5),
            "near_threshold": round(self.near_threshold, 5),
            "flip_disagreement": round(self.flip_disagreement, 5),
            "low_confidence_share": round(self.low_confidence_share, 5),
            "low_confidence_buildings": self.low_confidence_buildings,
            "buildings": self.buildings,
            "mean_confidence": None
            if self.mean_confidence is None
            else round(self.mean_confidence, 4),
            "covered": round(self.covered, 4),
            "top": self.rank <= top,
        }


@dataclass
class LabelProposal:
    """The ranked cells (best first), the GeoPackage and what the run saw."""

    cells: list[Cell]
    cell_m: float
    cell_px: int
    buildings: int
    out: Path | None
    crs: str | None
    seconds: float
    top: int = 3
    thresholds: dict[str, float] = field(default_factory=dict)
    #: Cells left out as already labelled (``exclude``).
    excluded: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary ``ternaus where-to-label`` prints and the job returns (the ``top``
        cells with their scores and bounds)."""
        return {
            "cells": len(self.cells),
            "excluded": self.excluded,
            "cell_m": self.cell_m,
            "cell_px": self.cell_px,
            "buildings": self.buildings,
            "top": [
                {**c.to_row(self.top), "bounds": [round(v, 3) for v in c.geometry.bounds]}
                for c in self.cells[: self.top]
            ],
            "body_threshold": self.thresholds.get("body"),
            "out": None if self.out is None else str(self.out),
            "layers": list(LAYERS) if self.out is not None else [],
            "crs": self.crs,
            "seconds": round(self.seconds, 2),
            "warnings": self.warnings,
        }


def near_threshold_bytes(body_threshold: float) -> tuple[float, float]:
    """The stored byte range [low, high] of body probabilities near ``body_threshold``."""
    t = min(max(body_threshold, 1e-4), 1 - 1e-4)
    centre = math.log(t / (1 - t))
    low = 1 / (1 + math.exp(-(centre - NEAR_THRESHOLD_LOGIT)))
    high = 1 / (1 + math.exp(-(centre + NEAR_THRESHOLD_LOGIT)))
    return byte_level(low), byte_level(high)


def propose_cells(
    rgb: str | Path,
    out: str | Path | None = None,
    ms: str | Path | None = None,
    model: str | Path | torch.nn.Module | None = None,
    aoi: str | Path | None = None,
    bbox: Bounds | None = None,
    bbox_crs: str | None = None,
    cell_m: float = 100.0,
    exclude: str | Path | None = None,
    top: int = 3,
    options: ExtractOptions | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    work_dir: str | Path | None = None,
    overwrite: bool = True,
) -> LabelProposal:
    """Rank square cells of ``cell_m`` metres over ``rgb`` (+ ``ms``; inside ``bbox`` and the
    ``aoi`` polygons when given) by how unsure ``model`` is there (module docstring); with
    ``out``, write the layers ``cells`` and ``buildings`` there. ``exclude``: polygons already
    labelled (e.g. the training area); a cell at least half inside them is left out."""
    started = time.perf_counter()
    if not cell_m > 0:
        raise InputError(f"The cell size must be positive (metres), got {cell_m}.")
    if top < 0:
        raise InputError(f"The number of cells to highlight must be 0 or more, got {top}.")
    if out is not None:
        out = check_output(out, suffix=".gpkg", kind="GeoPackage", overwrite=overwrite)
    opts = options or ExtractOptions()
    device = pick_device(opts.device)
    aoi_geoms, aoi_crs = _read_aoi(aoi)
    done_geoms, done_crs = _read_aoi(exclude, "area already labelled")
    if aoi_geoms is not None and bbox is None:
        bbox, bbox_crs = shapely.union_all(aoi_geoms).bounds, aoi_crs
    with raster_env():
        with RasterInputs.open(rgb, ms, bbox=bbox, bbox_crs=bbox_crs) as native:
            net = resolve_model(model, device)
            meta = net.metadata
            check_bands(native, meta, ms is not None)
        inputs = processing_inputs(rgb, ms, meta, bbox, bbox_crs, None, opts.native_resolution)
        with inputs, scratch_dir("ternaus-label-", work_dir) as tmp:
            pixel_m = inputs.grid.pixel_size_m
            if _cell_px(inputs, cell_m) < MIN_CELL_PX:
                raise InputError(
                    f"Cells of {cell_m:g} m are under {MIN_CELL_PX} pixels of "
                    f"{pixel_m:.2f} m: choose cells of at least {MIN_CELL_PX * pixel_m:.0f} m."
                )
            check_temp_space(
                estimate_extract(
                    inputs.grid,
                    meta.num_classes + 1,
                    tta=True,
                    device_kind=device.type,
                    work_dir=work_dir,
                    free_space=disk_free,
                )
            )
            if aoi_geoms is not None and aoi_crs is not None and inputs.grid.crs is not None:
                from ternaus_backend.vector_io import reproject_geometries

                aoi_geoms = reproject_geometries(aoi_geoms, aoi_crs, inputs.grid.crs)
            if done_geoms is not None and done_crs is not None and inputs.grid.crs is not None:
                from ternaus_backend.vector_io import reproject_geometries

                done_geoms = reproject_geometries(done_geoms, done_crs, inputs.grid.crs)
            buildings_path = Path(tmp) / "buildings.gpkg"
            store = _run_network(inputs, net, opts, device, buildings_path, tmp, progress, cancel)
            thresholds = opts.thresholds(meta.thresholds)
            polygons, props = read_polygons_with_properties(buildings_path)
            cells = _score_cells(
                store, inputs, thresholds.body, cell_m, polygons, props, aoi_geoms, cancel
            )
            excluded = 0
            if done_geoms is not None:
                labelled = shapely.union_all(done_geoms)
                kept = [c for c in cells if not _mostly_inside(c.geometry, labelled)]
                cells, excluded = kept, len(cells) - len(kept)
            cells.sort(key=lambda c: (-c.score, c.row, c.col))
            for rank, cell in enumerate(cells, start=1):
                cell.rank = rank
            crs = inputs.grid.crs
            proposal = LabelProposal(
                cells=cells,
                cell_m=cell_m,
                cell_px=_cell_px(inputs, cell_m),
                buildings=len(polygons),
                out=None,
                crs=None if crs is None else crs.to_string(),
                seconds=0.0,
                top=top,
                thresholds={"body": thresholds.body},
                excluded=excluded,
            )
            if not cells and excluded:
                proposal.warnings.append(
                    f"All {excluded} cells lie in the area already labelled: there is nothing "
                    "left to propose there; widen the extent."
                )
            elif not cells:
                proposal.warnings.append(
                    "No cell holds a pixel of the image inside the area: check that the area "
                    "(AOI) and the extent cover the image."
                )
            if out is not None:
                proposal.out = _write(Path(out), buildings_path, cells, top, crs)
    proposal.seconds = time.perf_counter() - started
    progress(ProgressEvent("done", 1, 1))
    return proposal


def _read_aoi(aoi: str | Path | None, role: str = "area") -> tuple[list | None, str | None]:
    if aoi is None:
        return None, None
    data = read_features(aoi)
    geoms = [g for g in data.geometries if g is not None and not g.is_empty]
    geoms = [g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    if not geoms:
        raise InputError(f"The {role} {Path(aoi).name} holds no polygon; draw it as polygons.")
    return geoms, data.crs


def _mostly_inside(cell, labelled) -> bool:
    """Whether at least half of ``cell`` lies inside ``labelled``."""
    return cell.intersects(labelled) and cell.intersection(labelled).area >= 0.5 * cell.area


def _cell_px(inputs: RasterInputs, cell_m: float) -> int:
    """A cell's side in pixels of the processing grid (at least 1)."""
    return max(1, int(round(cell_m / inputs.grid.pixel_size_m)))


def _run_network(inputs, net, opts, device, buildings_path, tmp, progress, cancel):
    """The flip-averaged maps and the flip-disagreement channel into a store, the buildings
    (extraction rule, calibrated confidence) into ``buildings_path``; returns the store."""
    meta = net.metadata
    grid_info = inputs.grid
    normalizer = Normalizer.fit(meta.normalization, inputs)
    plan = plan_device(
        device, meta.encoder, meta.tile_size_px, opts.batch_size, opts.precision, opts.compile
    )
    grid, overlap = scene_windows(grid_info.height, grid_info.width, meta, opts, plan)
    store = ProbabilityStore(
        Path(tmp) / "probabilities.u8", grid_info.height, grid_info.width, meta.num_classes + 1
    )
    writer = BuildingWriter(buildings_path, grid_info.crs)
    body_threshold = opts.thresholds(meta.thresholds).body
    try:
        with PolygonStage(store, inputs.source_grid, meta, opts, writer, cancel) as post:
            predict_probabilities(
                net,
                inputs,
                normalizer,
                store,
                grid,
                overlap,
                plan.batch_size,
                device,
                progress,
                cancel,
                plan=plan,
                on_rows=post.rows_done,
                network=flip_disagreement_network(body_threshold),
            )
            post.finish(progress)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return store


def _score_cells(
    store: ProbabilityStore,
    inputs: RasterInputs,
    body_threshold: float,
    cell_m: float,
    polygons: list,
    props: list[dict[str, Any]],
    aoi_geoms: list | None,
    cancel: CancelToken | None,
) -> list[Cell]:
    """Each cell's shares (module docstring), read from the store one row of cells at a time."""
    grid = inputs.grid
    height, width = grid.height, grid.width
    side = _cell_px(inputs, cell_m)
    rows, cols = -(-height // side), -(-width // side)
    cell_area = float(side * side)
    low, high = near_threshold_bytes(body_threshold)
    disagree_level = byte_level(0.5)
    counts = {
        k: np.zeros((rows, cols), np.int64) for k in ("valid", "near", "flip", "low_px", "low_n")
    }
    counts["n"] = np.zeros((rows, cols), np.int64)
    confidence_sum = np.zeros((rows, cols), np.float64)
    starts = np.arange(0, width, side)
    for r in range(rows):
        if cancel is not None:
            cancel.raise_if_cancelled()
        r0, r1 = r * side, min(height, (r + 1) * side)
        body, _, flips = store.read_bytes(r0, r1, 0, width)[:3]
        valid = inputs.valid(Window(0, r0, width, r1 - r0))
        if aoi_geoms is not None:
            strip = grid.transform * Affine.translation(0, r0)
            valid &= geometry_mask(aoi_geoms, (r1 - r0, width), strip, invert=True)
        near = valid & (body >= low) & (body <= high)
        flip = valid & (flips > disagree_level)
        for key, mask in (("valid", valid), ("near", near), ("flip", flip)):
            counts[key][r] = np.add.reduceat(mask.sum(axis=0), starts)
    pixel_area = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
    if polygons:
        inverse = ~grid.transform
        for poly, prop in zip(polygons, props, strict=True):
            point = poly.centroid
            col, row = inverse * (point.x, point.y)
            r, c = int(row // side), int(col // side)
            if not (0 <= r < rows and 0 <= c < cols):
                continue
            confidence = float(prop.get("confidence") or 0.0)
            counts["n"][r, c] += 1
            confidence_sum[r, c] += confidence
            if confidence < LOW_CONFIDENCE:
                counts["low_n"][r, c] += 1
                counts["low_px"][r, c] += int(round(poly.area / pixel_area))
    cells = []
    for r in range(rows):
        for c in range(cols):
            if counts["valid"][r, c] == 0:
                continue
            n = int(counts["n"][r, c])
            c0, r0 = c * side, r * side
            c1, r1 = min(width, c0 + side), min(height, r0 + side)
            x0, y0 = grid.transform * (c0, r0)
            x1, y1 = grid.transform * (c1, r1)
            cells.append(
                Cell(
                    row=r,
                    col=c,
                    geometry=box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                    near_threshold=counts["near"][r, c] / cell_area,
                    flip_disagreement=counts["flip"][r, c] / cell_area,
                    low_confidence_share=min(1.0, counts["low_px"][r, c] / cell_area),
                    low_confidence_buildings=int(counts["low_n"][r, c]),
                    buildings=n,
                    mean_confidence=float(confidence_sum[r, c] / n) if n else None,
                    covered=counts["valid"][r, c] / cell_area,
                )
            )
    return cells


def _write(out: Path, buildings_path: Path, cells: list[Cell], top: int, crs) -> Path:
    """The layers ``cells`` and ``buildings`` into ``out`` (replaced only once both are
    written)."""
    part = temporary_output(out)
    part.unlink(missing_ok=True)
    try:
        shutil.copyfile(buildings_path, part)
        write_layer(
            part,
            "cells",
            [c.geometry for c in cells],
            [c.to_row(top) for c in cells],
            CELL_FIELDS,
            None if crs is None else crs.to_wkt(),
            "Polygon",
        )
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
    return out
