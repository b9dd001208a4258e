"""Extraction on a Dask cluster (a LocalCluster of 2 worker processes here): the same buildings
as the single-process run, none duplicated or cut at block seams, a killed worker's block done
again elsewhere, and --resume that keeps finished blocks."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import fiona
import pytest
import rasterio
import shapely
import torch
from rasterio.windows import Window
from shapely.geometry import shape

from ternaus_backend.distributed.cluster import blocks_folder, extract_on_cluster
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.synthetic import make_scene
from tests.api.live import start_backend  # noqa: F401  (a real `ternaus serve`)

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

#: The default model's ground resolution: the scene needs no resampling.
RESOLUTION = 0.2967
#: The default model (resnet_light_deep) needs a 256 px seam guard (its registry entry):
#: with less, windows laid out differently in the two paths give visibly different outlines.
OPTIONS = ExtractOptions(tile_size_px=768, overlap_px=256)


def tiled_scene(folder: Path, size: int, tiles: int, seed: int) -> str:
    """A synthetic scene cut into ``tiles`` x ``tiles`` GeoTIFFs; returns their glob."""
    scene = make_scene(folder, seed=seed, size_px=size, resolution_m=RESOLUTION, with_ms=False)
    side = size // tiles
    with rasterio.open(scene.rgb) as src:
        for r in range(tiles):
            for c in range(tiles):
                window = Window(c * side, r * side, side, side)
                profile = dict(
                    src.profile, width=side, height=side, transform=src.window_transform(window)
                )
                with rasterio.open(folder / f"tile_{r}_{c}.tif", "w", **profile) as dst:
                    dst.write(src.read(window=window))
    return str(folder / "tile_*.tif")


def polygons(path: Path) -> list:
    with fiona.open(path) as src:
        return [shape(f["geometry"]) for f in src]


def single_process(tiles: str, out: Path) -> list:
    """The reference: one process, one thread per op like each worker (same float sums)."""
    from ternaus_backend.distributed.mosaic import mosaic

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract(mosaic(tiles, out.parent, "RGB"), out, options=OPTIONS)
    finally:
        torch.set_num_threads(threads)
    return polygons(out)


def fits_in_the_halo(building) -> bool:
    """Whether a building is smaller than the instance halo: only such buildings are whole
    whatever the blocks (larger ones are cut at block seams, with a warning, in both paths)."""
    x0, y0, x1, y1 = building.bounds
    return max(x1 - x0, y1 - y0) < OPTIONS.halo_px * RESOLUTION


def assert_same_buildings(expected: list, got: list) -> None:
    assert len(got) == len(expected)
    tree = shapely.STRtree(got)
    assert sum(map(fits_in_the_halo, expected)) > 0.95 * len(expected)
    for building in filter(fits_in_the_halo, expected):
        ious = [
            building.intersection(got[i]).area / building.union(got[i]).area
            for i in tree.query(building)
        ]
        # 0.95: a few outline pixels may differ where a block edge cuts the blending; outlines
        # reach out to the lower extent threshold (0.5), where probabilities are flatter, so a
        # tiny difference moves them more (one building of ~400 at 0.972). A building cut or
        # found twice scores far lower.
        assert ious and max(ious) > 0.95, f"{building.centroid} has no twin (IoU {ious})"
    # Nothing twice: no two results overlap.
    for i, building in enumerate(got):
        others = [j for j in tree.query(building) if j != i]
        assert all(building.intersection(got[j]).area < 0.05 * building.area for j in others)


@pytest.fixture(scope="module")
def large_tiles(tmp_path_factory) -> str:
    return tiled_scene(tmp_path_factory.mktemp("tiles16"), 4096, 4, seed=11)


@pytest.fixture(scope="module")
def small_tiles(tmp_path_factory) -> str:
    return tiled_scene(tmp_path_factory.mktemp("tiles4"), 2048, 2, seed=12)


def test_two_workers_give_the_single_process_buildings(large_tiles, tmp_path):
    expected = single_process(large_tiles, tmp_path / "single.gpkg")
    assert len(expected) > 100
    result = extract_on_cluster(
        large_tiles, tmp_path / "cluster.gpkg", "local:2", options=OPTIONS, block_px=2048
    )
    assert result.blocks == 4 and len(result.workers) == 2
    assert (result.tile_px, result.overlap_px) == (768, 256)
    assert_same_buildings(expected, polygons(result.path))
    assert not blocks_folder(result.path).exists()


def test_a_killed_worker_does_not_change_the_result(small_tiles, tmp_path):
    from distributed import Client, LocalCluster

    expected = single_process(small_tiles, tmp_path / "single.gpkg")
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())

            def kill_the_other_worker(done, finished: int, total: int) -> None:
                if not killed:  # the first block is done: kill the worker busy with another
                    victim = next(p for p in pids if p != done.worker_pid)
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)

            result = extract_on_cluster(
                small_tiles,
                tmp_path / "cluster.gpkg",
                "local:2",
                options=OPTIONS,
                block_px=1024,
                on_block=kill_the_other_worker,
                client=client,
            )
    assert killed, "no worker was killed"
    assert_same_buildings(expected, polygons(result.path))


def test_resume_keeps_the_blocks_an_interrupted_run_finished(small_tiles, tmp_path):
    out = tmp_path / "cluster.gpkg"

    class Interrupted(Exception):
        pass

    def stop_after_two(done, finished: int, total: int) -> None:
        if finished >= 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        extract_on_cluster(
            small_tiles, out, "local:2", options=OPTIONS, block_px=1024, on_block=stop_after_two
        )
    kept = sorted(blocks_folder(out).glob("block-*.gpkg"))
    assert len(kept) >= 2 and not out.exists()
    seen: list[str] = []
    result = extract_on_cluster(
        small_tiles,
        out,
        "local:2",
        options=OPTIONS,
        block_px=1024,
        resume=True,
        on_block=lambda done, finished, total: seen.append(done.name),
    )
    assert result.skipped == len(kept)
    assert not {p.stem for p in kept} & set(seen), "finished blocks were run again"
    assert len(seen) + result.skipped == result.blocks
    assert_same_buildings(single_process(small_tiles, tmp_path / "single.gpkg"), polygons(out))


def test_geoparquet_partitions(small_tiles, tmp_path):
    geopandas = pytest.importorskip("geopandas")
    out = tmp_path / "buildings.parquet"
    result = extract_on_cluster(small_tiles, out, "local:1", options=OPTIONS, block_px=1024)
    parts = sorted(out.glob("*.parquet"))
    assert len(parts) == result.blocks
    frame = geopandas.read_parquet(out)
    assert len(frame) == result.count > 0
    assert {"confidence", "area_m2"} <= set(frame.columns)
    assert frame.crs is not None


def test_the_http_backend_hands_large_jobs_to_the_cluster(
    start_backend,  # noqa: F811
    small_tiles,
    tmp_path,
):
    """``ternaus serve`` with a Dask scheduler set: a predict job runs block by block there."""
    from ternaus_backend.distributed.mosaic import mosaic
    from tests.api.live import wait_for_job

    scene = mosaic(small_tiles, tmp_path, "RGB")
    backend = start_backend(
        TERNAUS_DASK_SCHEDULER="local:2",
        TERNAUS_DASK_MIN_MEGAPIXELS="1",
        TERNAUS_ALLOWED_DIRS=str(tmp_path.parent),
    )
    with backend.client() as http:
        job = http.post(
            "/v1/jobs/predict",
            json={"rgb": str(scene), "options": {"tile_size_px": 512, "overlap_px": 64}},
        ).json()
        assert job["estimate"]["cluster"] == "local:2", job
        job = wait_for_job(http, job["id"], timeout_s=600)
        assert job["status"] == "succeeded", job.get("error")
        assert job["result"]["blocks"] == 1 and job["result"]["buildings"] > 0
        assert http.get(f"/v1/jobs/{job['id']}/result").status_code == 200
