"""The device plan and the prepared network (issue 11): CPU defaults, the float32 batch norm
under autocast, reduced precision within its stated tolerance, modules restored afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ternaus_backend.errors import InputError
from ternaus_backend.models import create_model
from ternaus_backend.models.abn import ABN
from ternaus_backend.pipeline.engine import (
    CPU_MAX_TILE_PX,
    REDUCED_PRECISION_ATOL,
    InferenceABN,
    cpu_has_native_bf16,
    inference_network,
    plan_device,
    reused_heap,
)
from ternaus_backend.pipeline.inference import run_network

CPU = torch.device("cpu")


def test_cpu_plan_is_batch_one_and_large_tiles_in_bf16_only_where_the_cpu_has_it(monkeypatch):
    plan = plan_device(CPU, "resnet_light", 512)
    expected = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert (plan.precision, plan.batch_size, plan.max_tile_px) == (expected, 1, CPU_MAX_TILE_PX)
    assert not plan.pin_memory and not plan.channels_last
    assert plan_device(CPU, "wrn38", 512, batch_size=3).batch_size == 3
    assert plan_device(CPU, "wrn38", 512, precision="float32").precision == "float32"
    # A CPU without bf16 units emulates bf16 (slower than float32): auto keeps float32 there.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert plan_device(CPU, "resnet_light", 512).precision == "float32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert plan_device(CPU, "resnet_light", 512).precision == "bfloat16"


def test_an_encoder_that_sees_further_gets_a_wider_seam_guard_and_the_same_step():
    light, deep = plan_device(CPU, "resnet_light", 512), plan_device(CPU, "resnet_light_deep", 512)
    assert (light.seam_guard_px, deep.seam_guard_px) == (128, 256)
    assert deep.max_tile_px - deep.seam_guard_px == light.max_tile_px - light.seam_guard_px


@pytest.mark.parametrize("precision", ["float16", "half", "int8"])
def test_precisions_a_cpu_cannot_run_are_refused(precision):
    with pytest.raises(InputError, match="float32|precision"):
        plan_device(CPU, "resnet_light", 512, precision=precision)


def _randomised_abn(channels: int) -> ABN:
    torch.manual_seed(1)
    abn = ABN(channels)
    with torch.no_grad():
        abn.weight.copy_(torch.randn(channels))  # signed: the |weight| + eps rule matters
        abn.bias.copy_(torch.randn(channels))
        abn.running_mean.copy_(torch.randn(channels))
        abn.running_var.copy_(torch.rand(channels) + 0.5)
    return abn.eval()


def test_inference_abn_equals_abn_and_stays_float32_under_autocast():
    abn = _randomised_abn(8)
    x = torch.randn(2, 8, 16, 16)
    fast = InferenceABN(abn)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x.clone()), abn(x.clone()), rtol=0, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast(x.bfloat16()).dtype == torch.float32


def test_inference_network_swaps_batch_norms_and_restores_them():
    model = create_model("resnet_light", in_channels=3).eval()
    before = [type(m) for m in model.modules()]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    plain = run_network(model, x, CPU)
    with inference_network(model, plan_device(CPU, "resnet_light", 64)) as net:
        assert any(isinstance(m, InferenceABN) for m in net.modules())
        prepared = run_network(net, x, CPU)
    assert [type(m) for m in model.modules()] == before
    np.testing.assert_allclose(prepared, plain, atol=1e-4)


def test_bfloat16_probabilities_match_float32_within_the_stated_tolerance():
    torch.manual_seed(0)
    model = create_model("resnet_light", in_channels=3).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    results = {}
    for precision in ("float32", "bfloat16"):
        plan = plan_device(CPU, "resnet_light", 128, precision=precision)
        with inference_network(model, plan) as net:
            results[precision] = torch.sigmoid(torch.from_numpy(run_network(net, x, CPU, plan)))
    difference = (results["bfloat16"] - results["float32"]).abs().max().item()
    assert difference <= REDUCED_PRECISION_ATOL, difference


def test_reused_heap_can_be_entered_repeatedly():
    for _ in range(2):
        with reused_heap():
            assert np.ones((1024, 1024), np.float32).sum() == 1024 * 1024


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_path_matches_float32_within_the_stated_tolerance():
    """On a lent GPU: autocast (bf16/fp16, batch norm in float32), channels-last, pinned memory
    and non-blocking copies give the float32 probabilities within REDUCED_PRECISION_ATOL."""
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("wrn38", in_channels=11).eval().to(cuda)
    x = np.random.default_rng(0).standard_normal((2, 11, 256, 256)).astype(np.float32)
    results = {}
    for precision in ("float32", "auto"):
        plan = plan_device(cuda, "wrn38", 256, precision=precision)
        with inference_network(model, plan) as net:
            results[precision] = torch.sigmoid(torch.from_numpy(run_network(net, x, cuda, plan)))
    difference = (results["auto"] - results["float32"]).abs().max().item()
    assert difference <= REDUCED_PRECISION_ATOL, difference
