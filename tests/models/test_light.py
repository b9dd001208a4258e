"""The light encoder: same decoder, output shape, size, training step, input left intact."""

from __future__ import annotations

import pytest
import torch

from ternaus_backend.models.decoder import TwoHeadUNet
from ternaus_backend.models.light import LightTernausNet
from ternaus_backend.models.registry import create_model

DECODER_PREFIXES = ("center.", "dec5.", "dec4.", "dec3.", "dec2.", "dec1.", "final.")


@pytest.mark.parametrize("in_channels", [3, 11])
def test_forward_shape(in_channels: int, abn_kind: str, random_bn) -> None:
    model = random_bn(create_model("resnet_light", in_channels=in_channels)).eval()
    x = torch.randn(1, in_channels, 64, 64)
    original = x.clone()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 2, 64, 64)
    assert logits.is_contiguous()
    assert torch.isfinite(logits).all()
    assert torch.equal(x, original), "the network must not modify its input"


def test_uses_the_same_decoder_as_wrn38() -> None:
    with torch.device("meta"):
        light = create_model("resnet_light", in_channels=3)
        wrn = create_model("wrn38", in_channels=3)
    assert type(light).__mro__[1] is TwoHeadUNet and isinstance(wrn, TwoHeadUNet)

    def decoder_names(model: torch.nn.Module) -> list[str]:
        return [k for k in model.state_dict() if k.startswith(DECODER_PREFIXES)]

    assert decoder_names(light) == decoder_names(wrn)
    assert light.num_filters == 16 and light.encoder_channels == (16, 32, 64, 128, 256)


def test_size_budget() -> None:
    with torch.device("meta"):
        model = LightTernausNet(in_channels=11)
    params = sum(p.numel() for p in model.parameters())
    values = sum(t.numel() for t in model.state_dict().values())
    assert 1_000_000 < params < 3_500_000
    assert values * 4 < 20 * 2**20  # float32 safetensors under 20 MB


def test_training_step(abn_kind: str) -> None:
    torch.manual_seed(0)
    model = create_model("resnet_light", in_channels=3).train()
    x = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 2, 64, 64) > 0.5).float()
    before = model.conv3.block1.bn1.running_mean.clone()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert not torch.equal(before, model.conv3.block1.bn1.running_mean)


def _training_step(monkeypatch: pytest.MonkeyPatch, pure: str) -> tuple[float, dict, dict]:
    monkeypatch.setenv("TERNAUS_PURE_ABN", pure)
    torch.manual_seed(0)
    model = create_model("resnet_light", in_channels=3).train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=generator)
    target = (torch.rand(2, 2, 64, 64, generator=generator) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    return loss.item(), grads, dict(model.named_buffers())


def test_inplace_abn_training_matches_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-Place ABN overwrites tensors: the blocks must clone where the input is reused."""
    from ternaus_backend.models.abn import HAS_INPLACE_ABN

    if not HAS_INPLACE_ABN:
        pytest.skip("inplace_abn is not installed")
    loss_pure, grads_pure, buffers_pure = _training_step(monkeypatch, "1")
    loss_inplace, grads_inplace, buffers_inplace = _training_step(monkeypatch, "0")
    assert loss_inplace == pytest.approx(loss_pure, rel=1e-6)
    for key, grad in grads_pure.items():
        scale = grad.abs().max().item() + 1e-12
        torch.testing.assert_close(grads_inplace[key], grad, atol=1e-4 * scale, rtol=0)
    for key, buffer in buffers_pure.items():
        torch.testing.assert_close(buffers_inplace[key], buffer)
