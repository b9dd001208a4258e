"""What a Dask worker runs for one block: the single-machine extraction on the block's window,
then only the buildings whose centre lies in the block's core, into the block's own file.

The model is loaded once per worker process (and device) and kept for the next blocks.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fiona
import shapely
from shapely.geometry import shape

from ternaus_backend.distributed.blocks import Block
from ternaus_backend.pipeline.extract import ExtractOptions, extract, resolve_model
from ternaus_backend.pipeline.polygons import BuildingWriter

_MODELS: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker needs for one block (plain, picklable values)."""

    block: Block
    rgb: str
    ms: str | None
    model: str | None
    transform: tuple[float, ...]  # the processing grid's affine (6 numbers)
    crs_wkt: str | None
    options: ExtractOptions
    out: str  # the block's finished file (written atomically; its existence means done)
    torch_threads: int | None = None
    pixel_m2: float = 0.0  # ground area of one processing-grid pixel


@dataclass(frozen=True)
class BlockDone:
    """What a block produced."""

    name: str
    path: str
    count: int
    seconds: float
    pixels: int
    km2: float  # ground area of the block's core
    worker_pid: int


def worker_model(model: str | None, device_name: str | None) -> Any:
    """The network for ``model`` on this worker's device, loaded once per process."""
    from ternaus_backend.device import pick_device

    device = pick_device(device_name)
    key = (str(model), str(device))
    if key not in _MODELS:
        _MODELS[key] = resolve_model(model, device)
    return _MODELS[key]


def run_block(task: BlockTask) -> BlockDone:
    """Extract one block and keep what its core owns; returns what was written."""
    import torch
    from affine import Affine
    from rasterio.crs import CRS

    started = time.perf_counter()
    if task.torch_threads:
        torch.set_num_threads(task.torch_threads)
    transform = Affine(*task.transform[:6])
    net = worker_model(task.model, task.options.device)
    out = Path(task.out)
    with tempfile.TemporaryDirectory(prefix=f"{task.block.name}-", dir=out.parent) as tmp:
        whole = Path(tmp) / "whole.gpkg"
        extract(
            task.rgb,
            whole,
            ms=task.ms,
            model=net,
            bbox=task.block.read_bounds(transform),
            options=task.options,
            work_dir=tmp,
        )
        if task.block.core == task.block.read:  # no halo (one block): every building is owned
            with fiona.open(whole) as src:
                count = len(src)
            os.replace(whole, out)
        else:
            polygons, confidences = _owned(whole, task.block, ~transform)
            writer = BuildingWriter(
                Path(tmp) / f"{task.block.name}.gpkg",
                CRS.from_wkt(task.crs_wkt) if task.crs_wkt else None,
            )
            try:
                writer.write(polygons, confidences)
                written = writer.commit()
            except BaseException:
                writer.abort()
                raise
            count = len(polygons)
            os.replace(written, out)  # last: a block file on disk is a finished block
    read, core = task.block.read, task.block.core
    return BlockDone(
        name=task.block.name,
        path=str(out),
        count=count,
        seconds=time.perf_counter() - started,
        pixels=int(read.width * read.height),
        km2=task.pixel_m2 * core.width * core.height / 1e6,
        worker_pid=os.getpid(),
    )


def _owned(path: Path, block: Block, inverse) -> tuple[list, list[float]]:
    """The polygons (and confidences) in ``path`` whose centroid lies in the block's core."""
    polygons, confidences = [], []
    with fiona.open(path) as src:
        for feature in src:
            polygon = shape(feature["geometry"])
            centre = shapely.centroid(polygon)
            col, row = inverse * (centre.x, centre.y)
            if block.owns(col, row):
                polygons.append(polygon)
                confidences.append(float(feature["properties"]["confidence"]))
    return polygons, confidences
