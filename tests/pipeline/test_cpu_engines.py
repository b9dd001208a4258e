"""The CPU engines (issue 20): the default model converted to ONNX Runtime and OpenVINO gives
the torch network's logits on a real window, the same buildings in a whole extraction, is
cached, and the engine option refuses what it cannot do with a message saying what to do.

Real network, real runtimes, CPU. The window is a crop of an OpenAerialMap mosaic from
``../shared/data`` when present, else a synthetic scene. Each runtime converts the model once
for the module (about 15 s each on 2 cores), into a temporary cache.

Tolerances: in float32 the runtimes compute the same convolutions as torch in another order
(other kernels: MLAS, oneDNN builds of their own), so logits differ by rounding only: about
3e-5 on logits of magnitude up to ~20 here; 1e-3 leaves a 30x margin, while a wrongly converted
layer moves logits by whole units (the legacy TorchScript exporter's was off by 16). OpenVINO in
bf16 (its choice on CPUs with bf16 units, as torch's ``auto``) is held to the probability
tolerance torch's own bf16 autocast is held to (``REDUCED_PRECISION_ATOL``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from scipy.special import expit

from ternaus_backend.errors import InputError
from ternaus_backend.evaluation.spacenet import score
from ternaus_backend.models.model_file import load_model
from ternaus_backend.pipeline import cpu_engines
from ternaus_backend.pipeline.engine import (
    REDUCED_PRECISION_ATOL,
    cpu_has_native_bf16,
    inference_network,
    plan_device,
)
from ternaus_backend.pipeline.extract import DEFAULT_MODEL, ExtractOptions, extract
from ternaus_backend.pipeline.inference import read_window, run_network
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.raster import RasterInputs
from ternaus_backend.synthetic import make_scene
from ternaus_backend.vector_io import read_polygons
from tests.helpers import SHARED_DATA

CPU = torch.device("cpu")
FLOAT32_LOGIT_ATOL = 1e-3
#: A crop of a real mosaic with buildings (Kampala, 89 mapped ones), in raster pixels.
REAL_RASTER = SHARED_DATA / "hotosm_oam" / "kampala_rgb.tif"
REAL_CROP = Window(0, 768, 512, 512)
WINDOW_PX = 256


def needs(engine: str):
    """Skips a test of ``engine`` where its packages are missing (``make setup`` installs them)."""
    missing = [n for n in cpu_engines.ENGINE_PACKAGES[engine] if not importlib.util.find_spec(n)]
    return pytest.mark.skipif(bool(missing), reason=f"{engine} needs {', '.join(missing)}")


ENGINES = [
    pytest.param("onnxruntime", marks=needs("onnxruntime")),
    pytest.param("openvino", marks=needs("openvino")),
]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture
def use_cache(engine_cache, monkeypatch) -> Path:
    monkeypatch.setenv(cpu_engines.CACHE_ENV, str(engine_cache))
    return engine_cache


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 512 px RGB raster: the real crop when the shared data is here, else a synthetic scene."""
    folder = tmp_path_factory.mktemp("scene")
    if not REAL_RASTER.exists():
        return make_scene(folder, seed=3, size_px=512, resolution_m=0.3, with_ms=False).rgb
    with rasterio.open(REAL_RASTER) as src:
        profile = src.profile | {
            "width": REAL_CROP.width,
            "height": REAL_CROP.height,
            "transform": src.window_transform(REAL_CROP),
            "tiled": False,
        }
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        data = src.read(window=REAL_CROP)
    out = folder / "kampala_crop_rgb.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@pytest.fixture(scope="module")
def window(model, scene) -> np.ndarray:
    """One normalised window (1, 3, 256, 256) of the scene, as the pipeline reads it."""
    meta = model.metadata
    with RasterInputs.open(scene, resolution_m=meta.resolution_m) as inputs:
        normalizer = Normalizer.fit(meta.normalization, inputs)
        image, _ = read_window(inputs, normalizer, 128, 128, WINDOW_PX, WINDOW_PX)
    return image[None]


def _logits(model, images, engine=None, precision="float32") -> np.ndarray:
    plan = plan_device(CPU, model.metadata.encoder, WINDOW_PX, 1, precision, engine=engine)
    with inference_network(model, plan) as net:
        return run_network(net, images, CPU, plan)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_engine_gives_torchs_float32_logits_on_a_real_window(model, window, engine, use_cache):
    torch_logits = _logits(model, window)
    engine_logits = _logits(model, window, engine)
    assert engine_logits.shape == torch_logits.shape == (1, 2, WINDOW_PX, WINDOW_PX)
    assert engine_logits.dtype == np.float32
    np.testing.assert_allclose(engine_logits, torch_logits, rtol=0, atol=FLOAT32_LOGIT_ATOL)
    # Height and width are dynamic, and so is the batch: one conversion serves every window.
    pair = np.concatenate([window[..., :128, :192], window[..., 128:, 64:]])
    np.testing.assert_allclose(
        _logits(model, pair, engine), _logits(model, pair), rtol=0, atol=FLOAT32_LOGIT_ATOL
    )


@needs("openvino")
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="the CPU has no bf16 units")
def test_openvino_runs_bf16_where_the_cpu_has_it_as_close_as_torchs_bf16(model, window, use_cache):
    plan = plan_device(CPU, model.metadata.encoder, WINDOW_PX, engine="openvino")
    assert plan.precision == "bfloat16" and plan.autocast_dtype is None
    reference = expit(_logits(model, window))
    torch_off = np.abs(expit(_logits(model, window, precision="bfloat16")) - reference)
    openvino_off = np.abs(expit(_logits(model, window, "openvino", None)) - reference)
    # As close to float32 as torch's bf16 autocast (today's CPU default): on average, and in
    # the share of pixels off by more than the stated tolerance (both have rare outliers).
    assert openvino_off.mean() <= 1.5 * torch_off.mean() + 1e-5
    far = REDUCED_PRECISION_ATOL
    assert (openvino_off > far).mean() <= 1.5 * (torch_off > far).mean() + 1e-4


@pytest.mark.parametrize("engine", ENGINES)
def test_an_extraction_with_an_engine_finds_torchs_buildings(
    model, scene, engine, use_cache, tmp_path
):
    reference = extract(scene, tmp_path / "torch.gpkg", model=model)
    options = ExtractOptions(engine=engine)
    result = extract(scene, tmp_path / f"{engine}.gpkg", model=model, options=options)
    torch_buildings = read_polygons(reference.path)
    engine_buildings = read_polygons(result.path)
    assert len(torch_buildings) >= 5, "the scene should have buildings"
    f1 = score(engine_buildings, torch_buildings).f1
    print(f"{engine}: {len(engine_buildings)} buildings, torch {len(torch_buildings)}, F1 {f1}")
    # bf16 (OpenVINO's auto on this CPU) may move a borderline pixel; float32 matches.
    assert f1 >= (0.99 if engine == "onnxruntime" else 0.98), f1


@pytest.mark.parametrize("engine", ENGINES)
def test_the_converted_model_is_cached_by_its_weights(model, engine, use_cache, monkeypatch):
    first = cpu_engines.converted_model(model, engine)
    assert first.is_relative_to(use_cache) and first.exists()

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setitem(cpu_engines._EXPORTERS, engine, no_conversion)
    assert cpu_engines.converted_model(model, engine) == first
    key = cpu_engines.model_key(model, engine, 3)
    bias = model.final.bias.detach().clone()
    with torch.no_grad():
        model.final.bias.add_(1.0)
    try:
        assert cpu_engines.model_key(model, engine, 3) != key  # e.g. a fine-tuned model
    finally:
        with torch.no_grad():
            model.final.bias.copy_(bias)
    assert cpu_engines.model_key(model, engine, 3) == key


def test_the_export_form_computes_what_the_network_does(model, window):
    """The converters' form of the network (phase convolutions, constant batch-norm scales)
    gives the same logits, from the loaded model and from one prepared for torch inference;
    the model itself is left as it was."""
    x = torch.from_numpy(window[..., :128, :160])
    before = [type(m) for m in model.modules()]
    with torch.inference_mode():
        reference = model(x)
        torch.testing.assert_close(
            cpu_engines.export_form(model)(x), reference, rtol=0, atol=FLOAT32_LOGIT_ATOL
        )
        plan = plan_device(CPU, model.metadata.encoder, WINDOW_PX, precision="float32")
        with inference_network(model, plan) as prepared:
            form = cpu_engines.export_form(prepared)
        torch.testing.assert_close(form(x), reference, rtol=0, atol=FLOAT32_LOGIT_ATOL)
    assert [type(m) for m in model.modules()] == before
    assert not any(isinstance(m, cpu_engines.PhaseDecoderBlock) for m in model.modules())


def test_the_cpu_engines_refuse_a_gpu_and_say_what_to_do():
    for engine in ("onnxruntime", "openvino"):
        with pytest.raises(InputError, match="CPU only.*torch engine"):
            plan_device(torch.device("cuda"), "resnet_light_deep", 512, engine=engine)


def test_a_missing_runtime_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        cpu_engines.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openvino" else real(name, *a),
    )
    with pytest.raises(InputError, match="pip install openvino.*or use the torch engine"):
        plan_device(CPU, "resnet_light_deep", 512, engine="openvino")


def test_engine_option_values_and_precisions():
    assert ExtractOptions().engine is None
    assert plan_device(CPU, "resnet_light_deep", 512).engine == "torch"
    with pytest.raises(InputError, match="engine"):
        ExtractOptions(engine="tensorrt")
    if importlib.util.find_spec("onnxruntime"):
        plan = plan_device(CPU, "resnet_light_deep", 512, engine="onnxruntime")
        assert (plan.precision, plan.autocast_dtype, plan.compile) == ("float32", None, False)
        with pytest.raises(InputError, match="onnxruntime engine runs in float32"):
            plan_device(CPU, "resnet_light_deep", 512, precision="bfloat16", engine="onnxruntime")
