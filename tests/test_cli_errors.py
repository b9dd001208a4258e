"""User-caused failures of the ``ternaus`` command line: exit 2 and one line, checked early.

These run ``cli.main`` in this process (fast, and a full disk or a read-only folder can be
simulated); ``tests/test_cli.py`` runs real processes.
"""

from __future__ import annotations

import errno
import json

import fiona
import numpy as np
import pytest
import rasterio

from ternaus_backend import cli
from ternaus_backend.models.model_file import save_model
from ternaus_backend.models.registry import create_model, metadata_for
from tests.helpers import rectangles_image, write_raster


@pytest.fixture(scope="module")
def light_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "light.safetensors"
    model = create_model("resnet_light", in_channels=3)
    save_model(model, metadata_for(model, tile_size_px=64, overlap_px=16, resolution_m=0.5), path)
    return path


@pytest.fixture
def rgb(tmp_path):
    return write_raster(tmp_path / "rgb.tif", rectangles_image(64, 64, [(10, 10, 30, 30)]))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *words: str) -> None:
    assert code == cli.EXIT_USER_ERROR, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    assert "unexpected" not in err and "Traceback" not in err, err
    for word in words:
        assert word in errors[0], err


def predict(capsys, rgb, model, out, *extra: str):
    return run(
        capsys, "predict", "--rgb", str(rgb), "--model", str(model), "--out", str(out), *extra
    )


# -- 3. silent overwrites ------------------------------------------------------------------


def test_predict_refuses_an_existing_output_unless_overwrite(tmp_path, capsys, rgb, light_model):
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"precious")
    code, _, err = predict(capsys, rgb, light_model, out)
    assert_user_error(code, err, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    code, stdout, err = predict(capsys, rgb, light_model, out, "--overwrite")
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["out"] == str(out)


def _train_args(rgb, labels, out, *extra):
    return [
        "train", "--rgb", str(rgb), "--labels", str(labels), "--out", str(out), "--epochs", "1",
        "--steps-per-epoch", "1", "--batch-size", "1", "--crop", "32", "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture
def labels(tmp_path):
    from shapely.geometry import box

    from ternaus_backend.vector_io import write_polygons

    path = tmp_path / "labels.geojson"
    write_polygons(path, [box(500005, 7449985, 500015, 7449995)], "EPSG:32723")
    return path


def test_train_refuses_an_existing_model_and_a_non_safetensors_name(tmp_path, capsys, rgb, labels):
    gpkg = tmp_path / "x.gpkg"
    gpkg.write_bytes(b"a geopackage")
    code, _, err = run(capsys, *_train_args(rgb, labels, gpkg))
    assert_user_error(code, err, ".safetensors")
    code, _, err = run(capsys, *_train_args(rgb, labels, gpkg, "--overwrite"))
    assert_user_error(code, err, ".safetensors")
    assert gpkg.read_bytes() == b"a geopackage"
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"my model")
    code, _, err = run(capsys, *_train_args(rgb, labels, model))
    assert_user_error(code, err, "already exists", "--overwrite")
    assert model.read_bytes() == b"my model"


# -- 7. every user-caused failure: exit 2, one line -------------------------------------------


def test_an_out_that_is_a_folder(tmp_path, capsys, rgb, light_model):
    folder = tmp_path / "results.gpkg"
    folder.mkdir()
    code, _, err = predict(capsys, rgb, light_model, folder)
    assert_user_error(code, err, "is a folder")


def test_unknown_bbox_crs(tmp_path, capsys, rgb, light_model):
    code, _, err = predict(
        capsys, rgb, light_model, tmp_path / "o.gpkg", "--bbox", "0,0,1,1", "--bbox-crs", "EPSG:0"
    )
    assert_user_error(code, err, "EPSG:0")


def test_port_out_of_range(capsys):
    code, _, err = run(capsys, "serve", "--port", "70000")
    assert_user_error(code, err, "70000")


def test_unwritable_output_folder_is_refused_before_the_network_runs(
    tmp_path, capsys, rgb, light_model, monkeypatch
):
    import tempfile

    from ternaus_backend.pipeline import inference

    real = tempfile.mkstemp
    ran = []

    def refuse(*args, dir=None, **kwargs):  # a read-only folder (chmod is no use as root)
        if dir is not None and str(dir).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(inference, "run_network", lambda *a: ran.append(1))
    (tmp_path / "ro").mkdir()
    code, _, err = predict(capsys, rgb, light_model, tmp_path / "ro" / "out.gpkg")
    assert_user_error(code, err, "cannot be written")
    assert not ran


def test_a_full_disk(tmp_path, capsys, rgb, light_model, monkeypatch):
    from ternaus_backend.pipeline import polygons

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(polygons.BuildingWriter, "commit", full)
    code, _, err = predict(capsys, rgb, light_model, tmp_path / "out.gpkg")
    assert_user_error(code, err, "full")


def test_a_corrupt_tile_inside_a_tiff(tmp_path, capsys, light_model):
    data = np.random.default_rng(0).integers(0, 255, (3, 256, 256)).astype(np.uint8)
    path = tmp_path / "tiled.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
        crs="EPSG:32723", transform=rasterio.transform.from_origin(500000, 7450000, 0.5, 0.5),
        tiled=True, blockxsize=128, blockysize=128, compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(data)
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(raw))
    code, _, err = predict(capsys, path, light_model, tmp_path / "out.gpkg")
    assert_user_error(code, err, "tiled.tif")


# -- 6. georeferencing and bounding boxes ----------------------------------------------------


def test_rasters_that_cannot_be_placed_on_the_map_are_refused(
    tmp_path, capsys, light_model, labels
):
    from tests.pipeline.test_georeferencing import write_plain

    image = rectangles_image(64, 64, [(10, 10, 30, 30)])
    chip = write_plain(tmp_path / "chip.tif", image)
    code, _, err = predict(capsys, chip, light_model, tmp_path / "a.gpkg")
    assert_user_error(code, err, "no georeferencing", "georeference it")
    transform = rasterio.transform.from_origin(500000.0, 7450000.0, 0.5, 0.5)
    no_crs = write_plain(tmp_path / "nocrs.tif", image, transform)
    code, _, err = predict(capsys, no_crs, light_model, tmp_path / "b.gpkg")
    assert_user_error(code, err, "has no CRS", "--assume-crs EPSG:xxxx")
    code, _, err = run(capsys, *_train_args(no_crs, labels, tmp_path / "m.safetensors"))
    assert_user_error(code, err, "has no CRS", "--assume-crs EPSG:xxxx")
    out = tmp_path / "c.gpkg"
    code, stdout, err = predict(capsys, no_crs, light_model, out, "--assume-crs", "EPSG:32723")
    assert code == 0, err
    with fiona.open(out) as layer:
        assert layer.crs.to_epsg() == 32723


def test_a_whole_world_bbox_works_and_a_nan_one_is_refused(tmp_path, capsys, rgb, light_model):
    world = ("--bbox=-180,-90,180,90", "--bbox-crs", "EPSG:4326")
    code, stdout, err = predict(capsys, rgb, light_model, tmp_path / "w.gpkg", *world)
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["width_px"] == 64
    for bbox in ("nan,0,1,1", "-inf,-inf,inf,inf", "1,1,0,0"):
        code, _, err = predict(capsys, rgb, light_model, tmp_path / "n.gpkg", f"--bbox={bbox}")
        assert_user_error(code, err, "XMIN,YMIN,XMAX,YMAX")


# -- issue 18, item 6: model metadata out of range --------------------------------------------


def _with_metadata(source, destination, change):
    """A copy of the model file ``source`` whose header metadata ``change(dict)`` edits (as a
    hand-edited or foreign file would be), written without validation."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta = json.loads(header["ternaus_metadata"])
    change(meta)
    header["ternaus_metadata"] = json.dumps(meta)
    save_file(tensors, str(destination), metadata=header)
    return destination


BAD_METADATA = {
    "body threshold above 1": (lambda m: m["thresholds"].update(body=1.5), "thresholds.body"),
    "negative border": (lambda m: m["thresholds"].update(border=-0.1), "thresholds.border"),
    "negative extent": (lambda m: m["thresholds"].update(extent=-1), "thresholds.extent"),
    "negative min area": (
        lambda m: m["thresholds"].update(min_area_px=-5),
        "thresholds.min_area_px",
    ),
    "std 0": (lambda m: m["normalization"].update(std=[0.2, 0.0, 0.2]), "normalization.std"),
    "negative std": (
        lambda m: m["normalization"].update(std=[0.2, -1.0, 0.2]),
        "normalization.std",
    ),
    "resolution 0": (lambda m: m.update(resolution_m=0), "resolution_m"),
    "negative resolution": (lambda m: m.update(resolution_m=-0.3), "resolution_m"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_model_metadata_out_of_range_is_refused(tmp_path, capsys, rgb, light_model, case):
    change, field = BAD_METADATA[case]
    bad = _with_metadata(light_model, tmp_path / "bad.safetensors", change)
    out = tmp_path / "out.gpkg"
    code, _, err = predict(capsys, rgb, bad, out)
    assert_user_error(code, err, f"The metadata in {bad} is invalid ({field}:")
    assert not out.exists()
    code, _, err = run(capsys, "info", str(bad))
    assert_user_error(code, err, field)


def test_train_init_refuses_a_model_with_bad_metadata(tmp_path, capsys, rgb, labels, light_model):
    """``ternaus train --init`` loads through the same check: bad values are not copied into
    the new model."""
    bad = _with_metadata(
        light_model, tmp_path / "bad.safetensors", lambda m: m["thresholds"].update(body=-0.5)
    )
    out = tmp_path / "tuned.safetensors"
    code, _, err = run(capsys, *_train_args(rgb, labels, out, "--init", str(bad)))
    assert_user_error(code, err, f"The metadata in {bad} is invalid (thresholds.body:")
    assert not out.exists()


def test_train_on_point_labels_says_they_are_not_polygons(tmp_path, capsys, rgb):
    """Issue 18, item 12: point labels get "not polygons", not a CRS hint."""
    from shapely.geometry import Point

    points = tmp_path / "points.gpkg"
    with fiona.open(
        points, "w", driver="GPKG", crs="EPSG:32723",
        schema={"geometry": "Point", "properties": {}},
    ) as dst:  # fmt: skip
        dst.write({"geometry": Point(500010, 7449990).__geo_interface__, "properties": {}})
    out = tmp_path / "m.safetensors"
    code, _, err = run(capsys, *_train_args(rgb, points, out))
    assert_user_error(code, err, "holds points, not polygons; draw building footprints")
    assert "CRS" not in err and not out.exists()


# -- issue 18, item 13: a raster upsampled far beyond its detail ------------------------------


def test_upsampling_more_than_4x_is_warned_with_its_cost(tmp_path, capsys, caplog, light_model):
    """The light model works at 0.5 m: a 2.5 m raster is upsampled 5x per side (warned, with
    the cost), a 2 m raster 4x (not warned)."""
    coarse = write_raster(
        tmp_path / "coarse.tif", rectangles_image(40, 40, [(10, 10, 20, 20)]), pixel=2.5
    )
    code, stdout, err = predict(capsys, coarse, light_model, tmp_path / "a.gpkg")
    assert code == 0, err
    expected = "The raster's 2.50 m pixels are upsampled 5.0x per side (25x the pixels)"
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m for m in logged if m.startswith(f"{expected} to the model's 0.50 m: 0.0 Mpx")]
    assert "MB of temporary disk" in logged[-1] and "--native-resolution" in logged[-1]
    caplog.clear()
    warnings = json.loads(stdout.splitlines()[-1])["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith(expected)

    fine = write_raster(
        tmp_path / "fine.tif", rectangles_image(40, 40, [(10, 10, 20, 20)]), pixel=2.0
    )
    code, stdout, err = predict(capsys, fine, light_model, tmp_path / "b.gpkg")
    assert code == 0 and not [r for r in caplog.records if "upsampled" in r.getMessage()]
    assert json.loads(stdout.splitlines()[-1])["warnings"] == []
