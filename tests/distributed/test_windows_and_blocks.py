"""``predict --cluster`` at default settings runs the single-process windows, and refuses
unusable block sizes without leaving a ``.blocks`` folder behind (issue 18, item 10 and the
window-size finding)."""

from __future__ import annotations

import pytest

from ternaus_backend import cli
from ternaus_backend.device import pick_device
from ternaus_backend.distributed.cluster import (
    DEFAULT_BLOCK_PX,
    _tasks,
    blocks_folder,
    extract_on_cluster,
)
from ternaus_backend.distributed.mosaic import mosaic
from ternaus_backend.errors import InputError
from ternaus_backend.pipeline.engine import plan_device
from ternaus_backend.pipeline.extract import ExtractOptions, model_metadata, scene_windows
from tests.distributed.test_cluster import tiled_scene


@pytest.fixture(scope="module")
def sixteen_tiles(tmp_path_factory) -> str:
    """A 2048 px scene as 4 x 4 GeoTIFF tiles of 512 px."""
    return tiled_scene(tmp_path_factory.mktemp("tiles16"), 2048, 4, seed=5)


def test_one_block_at_default_settings_runs_the_single_process_windows(sixteen_tiles, tmp_path):
    options = ExtractOptions()  # the defaults of `ternaus predict` (and --cluster)
    vrt = mosaic(sixteen_tiles, tmp_path, "RGB")
    tasks, grid, (tile_px, overlap_px) = _tasks(
        vrt, None, None, options, DEFAULT_BLOCK_PX, tmp_path
    )
    assert len(tasks) == 1 and (grid.width, grid.height) == (2048, 2048)
    meta = model_metadata(None)
    plan = plan_device(
        pick_device(options.device), meta.encoder, meta.tile_size_px, options.batch_size,
        options.precision, options.compile,
    )  # fmt: skip
    single = scene_windows(grid.height, grid.width, meta, options, plan)
    read = tasks[0].block.read
    assert (read.width, read.height) == (2048, 2048)  # the worker's extract sees the whole scene
    worker = scene_windows(read.height, read.width, meta, tasks[0].options, plan)
    assert worker == single
    windows, overlap = single
    assert (tile_px, overlap_px) == (max(windows.tile_h, windows.tile_w), overlap)


@pytest.mark.parametrize("block_px", [0, -5, 10, 511])
def test_unusable_block_sizes_are_refused_and_leave_no_folder(
    sixteen_tiles, tmp_path, capsys, block_px
):
    out = tmp_path / "out.gpkg"
    with pytest.raises(InputError, match="--block-px must be at least 512 px"):
        extract_on_cluster(sixteen_tiles, out, "local:1", block_px=block_px)
    code = cli.main(
        ["predict", "--rgb", sixteen_tiles, "--out", str(out), "--cluster", "local:2",
         "--block-px", str(block_px)]
    )  # fmt: skip
    assert code == cli.EXIT_USER_ERROR
    assert f"--block-px must be at least 512 px, got {block_px}" in capsys.readouterr().err
    assert not blocks_folder(out).exists() and not out.exists()


def test_a_cluster_run_refused_after_the_checks_leaves_no_blocks_folder(sixteen_tiles, tmp_path):
    out = tmp_path / "out.gpkg"
    with pytest.raises(InputError, match="local:N needs a number of workers"):
        extract_on_cluster(sixteen_tiles, out, "local:0")
    assert not blocks_folder(out).exists() and list(tmp_path.iterdir()) == []
