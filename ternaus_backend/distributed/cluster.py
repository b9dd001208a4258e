"""Extraction of one scene on a Dask cluster: blocks to workers, finished blocks kept on disk,
one output at the end (a GeoPackage, or GeoParquet partitions for very large outputs).

``--cluster local:N`` starts a ``LocalCluster`` of N single-threaded worker processes;
``--cluster tcp://HOST:8786`` uses a running ``dask scheduler`` and its ``dask worker`` s.
Dask retries a block whose worker died; ``resume`` skips blocks whose file is already written.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ternaus_backend.device import pick_device
from ternaus_backend.distributed.blocks import Block, plan_blocks
from ternaus_backend.distributed.mosaic import mosaic
from ternaus_backend.distributed.worker import BlockDone, BlockTask, run_block
from ternaus_backend.errors import InputError
from ternaus_backend.outputs import check_output
from ternaus_backend.pipeline.engine import plan_device
from ternaus_backend.pipeline.extract import (
    ExtractOptions,
    model_metadata,
    processing_inputs,
    scene_windows,
)
from ternaus_backend.pipeline.raster import raster_env

log = logging.getLogger(__name__)

#: Core side of a block, in processing-grid pixels (2.4 km at 0.3 m).
DEFAULT_BLOCK_PX = 8192
#: The smallest block side accepted: smaller blocks are mostly halo (each block reads a halo of
#: at least one window step on every side), and 0 or less would never end.
MIN_BLOCK_PX = 512
#: How many times Dask runs a block again after its worker failed or died.
RETRIES = 3


@dataclass
class ClusterResult:
    """What a distributed extraction produced."""

    path: Path
    count: int
    blocks: int
    skipped: int  # finished blocks found on disk (resume)
    seconds: float
    area_km2: float
    workers: list[int]  # process ids of the workers that ran blocks
    tile_px: int = 0  # the windows every block ran
    overlap_px: int = 0


@contextmanager
def dask_client(address: str):
    """A ``distributed.Client`` for ``local:N`` (a LocalCluster, closed afterwards) or a
    scheduler address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise InputError(
            "--cluster needs Dask: pip install 'ternaus-backend[cluster]' (dask[distributed])."
        ) from exc
    if address.startswith("local:"):
        try:
            workers = int(address.split(":", 1)[1])
        except ValueError:
            workers = 0
        if workers < 1:
            raise InputError(f"--cluster local:N needs a number of workers N >= 1, got {address}.")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.WARNING,
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"No Dask scheduler answers at {address}: start one (dask scheduler) and its workers "
            "(dask worker ADDRESS), or use --cluster local:N."
        ) from exc
    try:
        yield client
    finally:
        client.close()


def blocks_folder(out: Path) -> Path:
    """Where finished blocks are kept until the output is complete (and for --resume)."""
    return out.parent / f".{out.name}.blocks"


def extract_on_cluster(
    rgb: str | Path | Sequence[str | Path],
    out: str | Path,
    cluster: str,
    ms: str | Path | Sequence[str | Path] | None = None,
    model: str | Path | None = None,
    options: ExtractOptions | None = None,
    block_px: int = DEFAULT_BLOCK_PX,
    resume: bool = False,
    overwrite: bool = False,
    on_block: Callable[[BlockDone, int, int], None] | None = None,
    client: Any = None,
) -> ClusterResult:
    """The single-machine extraction of ``rgb`` (+ ``ms``), block by block on a Dask cluster.

    ``out``: a ``.gpkg`` file, or a folder ending in ``.parquet`` for GeoParquet partitions (one
    per block). ``on_block(done, finished, total)`` sees each finished block.
    """
    started = time.perf_counter()
    opts = options or ExtractOptions()
    if not isinstance(block_px, int) or block_px < MIN_BLOCK_PX:
        raise InputError(
            f"--block-px must be at least {MIN_BLOCK_PX} px, got {block_px}: smaller blocks are "
            f"mostly halo. Use the default {DEFAULT_BLOCK_PX}, or 2048 to 8192."
        )
    out = Path(out)
    parquet = out.suffix.lower() == ".parquet"
    if not parquet:
        out = check_output(out, suffix=".gpkg", kind="GeoPackage", overwrite=overwrite or resume)
    elif out.exists() and not (overwrite or resume):
        raise InputError(f"{out} exists: pass --overwrite to replace it (or --resume).")
    folder = blocks_folder(out)
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rgb_path = mosaic(rgb, folder, "RGB")
        ms_path = mosaic(ms, folder, "multispectral") if ms is not None else None
        tasks, grid, (tile_px, overlap_px) = _tasks(
            rgb_path, ms_path, model, opts, block_px, folder
        )
        todo = [t for t in tasks if not Path(t.out).is_file()]
        skipped = len(tasks) - len(todo)
        if skipped:
            log.info("resume: %d of %d blocks are already done", skipped, len(tasks))
        pids: set[int] = set()
        with dask_client(cluster) if client is None else nullcontext(client) as dask:
            threads = _torch_threads(dask) if cluster.startswith("local:") else None
            todo = [replace(t, torch_threads=threads) for t in todo]
            pids |= _run(dask, todo, skipped, len(tasks), on_block)
    except BaseException:
        if not any(folder.glob("block-*.gpkg")):  # nothing for --resume: leave no trace
            shutil.rmtree(folder, ignore_errors=True)
        raise
    count = _merge([Path(t.out) for t in tasks], out, grid.crs, parquet)
    shutil.rmtree(folder, ignore_errors=True)
    return ClusterResult(
        path=out,
        count=count,
        blocks=len(tasks),
        skipped=skipped,
        seconds=time.perf_counter() - started,
        area_km2=grid.area_km2,
        workers=sorted(pids),
        tile_px=tile_px,
        overlap_px=overlap_px,
    )


def _tasks(rgb, ms, model, opts: ExtractOptions, block_px: int, folder: Path):
    """One task per block of the processing grid (the model's resolution), the grid, and the
    (largest) window side and overlap the blocks run."""
    meta = model_metadata(model)
    with (
        raster_env(),
        processing_inputs(rgb, ms, meta, None, None, None, opts.native_resolution) as inputs,
    ):
        grid = inputs.grid
    tile, overlap = block_windows(meta, opts)
    blocks: list[Block] = plan_blocks(
        grid.height, grid.width, tile, overlap, block_px, opts.halo_px
    )
    if len(blocks) == 1 and opts.tile_size_px is None:
        # One block is the whole scene: its worker sizes the windows to the scene exactly as
        # the single-process run does (balanced windows up to the device's limit).
        plan = _device_plan(meta, opts)
        windows, overlap = scene_windows(grid.height, grid.width, meta, opts, plan)
        tile = max(windows.tile_h, windows.tile_w)
    else:
        # Blocks must run the whole scene's windows: one tile size and overlap everywhere.
        opts = opts.model_copy(update={"tile_size_px": tile, "overlap_px": overlap})
    crs_wkt = grid.crs.to_wkt() if grid.crs is not None else None
    tasks = [
        BlockTask(
            block=b,
            rgb=str(rgb),
            ms=str(ms) if ms is not None else None,
            model=str(model) if model is not None else None,
            transform=tuple(grid.transform)[:6],
            crs_wkt=crs_wkt,
            options=opts,
            out=str(folder / f"{b.name}.gpkg"),
            pixel_m2=grid.area_km2 * 1e6 / max(1, grid.width * grid.height),
        )
        for b in blocks
    ]
    return tasks, grid, (tile, overlap)


def _device_plan(meta, opts: ExtractOptions):
    return plan_device(
        pick_device(opts.device),
        meta.encoder,
        meta.tile_size_px,
        opts.batch_size,
        opts.precision,
        opts.compile,
    )


def block_windows(meta, opts: ExtractOptions) -> tuple[int, int]:
    """Window side and overlap of every block: the caller's, else the device plan's largest
    window with its seam guard (``ternaus predict --tile T --overlap O`` gives the same result
    on one machine)."""
    if opts.tile_size_px is not None:
        tile = opts.tile_size_px
        overlap = opts.overlap_px if opts.overlap_px is not None else meta.overlap_px
    else:
        plan = _device_plan(meta, opts)
        tile = plan.max_tile_px
        overlap = opts.overlap_px
        if overlap is None:
            overlap = max(meta.overlap_px, plan.seam_guard_px)
        overlap = min(overlap, plan.max_tile_px // 2)  # as the single-process run clamps it
    return tile, min(overlap, tile - 32)


def _run(dask, tasks: list[BlockTask], finished: int, total: int, on_block) -> set[int]:
    """Submit the blocks, wait for all; Dask runs a failed block again (``RETRIES``)."""
    from distributed import as_completed

    if not tasks:
        return set()
    futures = dask.map(
        run_block,
        tasks,
        retries=RETRIES,
        pure=False,
        key=[f"ternaus-{t.block.name}-{os.getpid()}-{time.time_ns()}" for t in tasks],
    )
    pids = set()
    for future in as_completed(futures):
        done: BlockDone = future.result()
        finished += 1
        pids.add(done.worker_pid)
        if on_block is not None:
            on_block(done, finished, total)
    return pids


def _merge(files: list[Path], out: Path, crs, parquet: bool) -> int:
    """The blocks' buildings in one GeoPackage, or one GeoParquet file per block in ``out``."""
    if parquet:
        return _merge_parquet(files, out)
    import fiona

    if len(files) == 1:  # one block: its file is the output
        with fiona.open(files[0]) as src:
            count = len(src)
        os.replace(files[0], out)
        return count
    from shapely.geometry import shape

    from ternaus_backend.pipeline.polygons import BuildingWriter

    writer = BuildingWriter(out, crs)
    try:
        for path in files:
            with fiona.open(path) as src:
                rows = [(shape(f["geometry"]), f["properties"]["confidence"]) for f in src]
            writer.write([r[0] for r in rows], [r[1] for r in rows])
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.count


def _merge_parquet(files: list[Path], out: Path) -> int:
    import geopandas

    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    for path in files:
        frame = geopandas.read_file(path)
        count += len(frame)
        frame.to_parquet(partial / f"{path.stem}.parquet")
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    return count


def _torch_threads(dask) -> int:
    """CPU threads per worker of a local cluster: the cores shared out, at least one."""
    workers = max(1, len(dask.scheduler_info().get("workers", {})))
    return max(1, (os.cpu_count() or 1) // workers)
