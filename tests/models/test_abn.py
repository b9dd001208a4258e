"""Activated batch norm: the |weight| + eps rule, training statistics, In-Place ABN parity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ternaus_backend.models import abn as abn_module
from ternaus_backend.models.abn import ABN, HAS_INPLACE_ABN, make_abn

needs_inplace_abn = pytest.mark.skipif(not HAS_INPLACE_ABN, reason="inplace_abn is not installed")
STATE_NAMES = ["weight", "bias", "running_mean", "running_var"]


def _signed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    n = module.weight.numel()
    with torch.no_grad():
        module.weight.copy_(torch.randn(n, generator=generator))
        module.bias.copy_(0.1 * torch.randn(n, generator=generator))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return module


def test_abn_state_dict_names() -> None:
    assert list(ABN(8).state_dict()) == STATE_NAMES


def test_abn_eval_uses_absolute_weight() -> None:
    module = _signed(ABN(6)).eval()
    x = torch.randn(2, 6, 5, 5)
    scale = (module.weight.abs() + 1e-5)[:, None, None]
    normed = (x - module.running_mean[:, None, None]) / torch.sqrt(
        module.running_var[:, None, None] + 1e-5
    )
    expected = F.leaky_relu(normed * scale + module.bias[:, None, None], 0.01)
    torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=1e-6)


def test_abn_training_updates_running_stats_like_batchnorm() -> None:
    module = ABN(4)
    reference = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        module.weight.fill_(0.7)
        reference.weight.fill_(0.7 + 1e-5)
    x = torch.randn(3, 4, 6, 6)
    y = module(x)
    expected = F.leaky_relu(reference(x), 0.01)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(module.running_mean, reference.running_mean)
    torch.testing.assert_close(module.running_var, reference.running_var)


def test_make_abn_honours_pure_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERNAUS_PURE_ABN", "1")
    assert type(make_abn(4)) is ABN


@needs_inplace_abn
def test_inplace_abn_has_reference_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERNAUS_PURE_ABN", raising=False)
    module = make_abn(8)
    assert isinstance(module, abn_module.InPlaceABN)
    assert list(module.state_dict()) == STATE_NAMES
    module.load_state_dict(ABN(8).state_dict(), strict=True)


@needs_inplace_abn
def test_inplace_abn_matches_abn_in_eval() -> None:
    pure = _signed(ABN(16)).eval()
    inplace = abn_module.InPlaceABN(16).eval()
    inplace.load_state_dict(pure.state_dict())
    x = 3 * torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(inplace(x.clone()), pure(x), atol=1e-5, rtol=0)


@needs_inplace_abn
def test_inplace_abn_matches_abn_in_training_on_cpu() -> None:
    pure = _signed(ABN(8), seed=1).train()
    inplace = abn_module.InPlaceABN(8).train()
    inplace.load_state_dict(pure.state_dict())
    x = torch.randn(4, 8, 6, 6)

    x_pure = x.clone().requires_grad_(True)
    y_pure = pure(x_pure * 1.0)
    y_pure.square().sum().backward()
    x_inplace = x.clone().requires_grad_(True)
    y_inplace = inplace(x_inplace * 1.0)  # the product is overwritten, not the leaf
    y_inplace.square().sum().backward()

    torch.testing.assert_close(y_inplace, y_pure, atol=1e-5, rtol=0)
    torch.testing.assert_close(inplace.running_mean, pure.running_mean)
    torch.testing.assert_close(inplace.running_var, pure.running_var)
    for got, want in (
        (x_inplace.grad, x_pure.grad),
        (inplace.weight.grad, pure.weight.grad),
        (inplace.bias.grad, pure.bias.grad),
    ):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@needs_inplace_abn
def test_to_pure_abn_keeps_the_weights_and_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    from ternaus_backend.models.registry import create_model

    monkeypatch.delenv("TERNAUS_PURE_ABN", raising=False)
    torch.manual_seed(0)
    model = create_model("resnet_light", in_channels=3).eval()
    for module in model.modules():
        if isinstance(module, abn_module.InPlaceABN):
            _signed(module, seed=module.num_features)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x.clone())

    replaced = abn_module.to_pure_abn(model)

    assert replaced > 0
    assert not any(isinstance(m, abn_module.InPlaceABN) for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        torch.testing.assert_close(after[key], value)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, atol=1e-4, rtol=1e-4)
    assert abn_module.to_pure_abn(model) == 0  # nothing left to replace
