"""The decoder's fused upsample + convolution equals the literal reference form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ternaus_backend.models.decoder import DecoderBlock, upsample2x_conv3x3


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_upsample_conv_matches_reference(channels_last: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 6, 10, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(5, 12, 3, 3, generator=generator, requires_grad=True)
    bias = torch.randn(5, generator=generator, requires_grad=True)

    fused = upsample2x_conv3x3(x, weight, bias)
    reference = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    assert fused.is_contiguous(memory_format=torch.channels_last) == channels_last

    grads = torch.autograd.grad(fused.square().sum(), (x, weight, bias))
    reference_grads = torch.autograd.grad(reference.square().sum(), (x, weight, bias))
    for got, want in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


def test_decoder_block_forward_equals_its_sequential_form() -> None:
    torch.manual_seed(0)
    block = DecoderBlock(8, 6, 4)
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.block(x), atol=1e-5, rtol=1e-5)
    assert [k for k in block.state_dict()] == [
        "block.1.conv.weight",
        "block.1.conv.bias",
        "block.2.conv.weight",
        "block.2.conv.bias",
    ]
