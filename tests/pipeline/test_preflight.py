"""The pre-flight estimate of an extraction and its disk check (issue 7, item 9).

The disk is never filled: the free-space function is injected (or patched for the CLI).
"""

from __future__ import annotations

import pytest
from affine import Affine
from rasterio.crs import CRS

from ternaus_backend import cli
from ternaus_backend.errors import InputError
from ternaus_backend.pipeline import extract as extract_module
from ternaus_backend.pipeline.extract import ExtractOptions, preflight
from ternaus_backend.pipeline.preflight import check_temp_space, estimate_extract
from ternaus_backend.pipeline.raster import GridInfo
from tests.api.conftest import make_model_file
from tests.helpers import rectangles_image, write_raster


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_file(tmp_path_factory.mktemp("model") / "m.safetensors")


@pytest.fixture
def rgb(tmp_path):
    return write_raster(tmp_path / "rgb.tif", rectangles_image(96, 128, [(10, 10, 40, 40)]))


def test_the_estimate_counts_the_probability_map(tmp_path):
    grid = GridInfo(4000, 3000, Affine(0.5, 0, 500000, 0, -0.5, 7450000), CRS.from_epsg(32723))
    estimate = estimate_extract(grid, 2, work_dir=tmp_path, free_space=lambda folder: 10**12)
    assert estimate.pixels == 12_000_000 and estimate.temp_bytes == 24_000_000
    assert estimate.km2 == pytest.approx(3.0, rel=0.01)  # 2 km x 1.5 km
    assert 0 < estimate.eta_s < estimate_extract(grid, 2, tta=True, free_space=lambda f: 1).eta_s
    assert estimate.temp_dir == str(tmp_path) and estimate.free_bytes == 10**12
    assert check_temp_space(estimate) is estimate
    full = estimate_extract(grid, 2, work_dir=tmp_path / "job" / "x", free_space=lambda f: 10**7)
    assert full.temp_dir == str(tmp_path)  # a folder not made yet counts by its parent
    with pytest.raises(InputError, match="temporary space") as error:
        check_temp_space(full)
    assert "10.0 MB is free" in error.value.message and "smaller extent" in error.value.message


def test_preflight_reads_headers_and_refuses_what_cannot_fit(tmp_path, rgb, model):
    estimate = preflight(rgb, model=model, work_dir=tmp_path, free_space=lambda f: 10**12)
    assert estimate.pixels == 96 * 128 and estimate.temp_bytes == 96 * 128 * 2
    clipped = preflight(
        rgb,
        model=model,
        bbox=(500000.0, 7449980.0, 500010.0, 7450000.0),
        options=ExtractOptions(tta=True),
        free_space=lambda f: 10**12,
    )
    assert clipped.pixels == 20 * 40 and clipped.eta_s > 0
    with pytest.raises(InputError, match="temporary space"):
        preflight(rgb, model=model, work_dir=tmp_path, free_space=lambda f: 1000)


def test_cli_predict_runs_the_same_check(tmp_path, rgb, model, capsys, monkeypatch):
    monkeypatch.setattr(extract_module, "disk_free", lambda folder: 1000)
    out = tmp_path / "b.gpkg"
    code = cli.main(["predict", "--rgb", str(rgb), "--model", str(model), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR, err
    assert "temporary space" in err and "1 KB is free" in err and not out.exists()
    monkeypatch.setattr(extract_module, "disk_free", lambda folder: 10**12)
    code = cli.main(["predict", "--rgb", str(rgb), "--model", str(model), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
