"""Changing the number of input bands for fine-tuning."""

from __future__ import annotations

import torch

from ternaus_backend.models import adapt_first_layer, create_model


def test_widening_with_zeros_keeps_the_function(pure_abn, random_bn) -> None:
    model = random_bn(create_model("resnet_light", in_channels=3)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        adapt_first_layer(model, 11)
        after = model(torch.cat([x, torch.randn(1, 8, 64, 64)], 1))
    assert model.in_channels == 11
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_narrowing_keeps_the_rgb_filters() -> None:
    with torch.no_grad():
        model = create_model("resnet_light", in_channels=11)
    state = model.state_dict()
    rgb = state["conv1.conv1.weight"][:, :3].clone()
    adapted = adapt_first_layer(state, 3)
    assert adapted is not state and state["conv1.conv1.weight"].shape[1] == 11
    assert torch.equal(adapted["conv1.conv1.weight"], rgb)
    create_model("resnet_light", in_channels=3).load_state_dict(adapted, strict=True)


def test_mean_mode_keeps_the_response_to_equal_bands() -> None:
    weight = torch.randn(16, 3, 3, 3)
    state = adapt_first_layer({"conv1.conv1.weight": weight}, 5, mode="mean")
    widened = state["conv1.conv1.weight"]
    assert widened.shape == (16, 5, 3, 3)
    torch.testing.assert_close(widened.sum(1), weight.sum(1))


def test_growing_resnet_light_deeper_keeps_the_function(random_bn) -> None:
    from ternaus_backend.models.adapt import grow_deeper

    torch.manual_seed(0)
    shallow = random_bn(create_model("resnet_light", in_channels=3)).eval()
    deep = create_model("resnet_light_deep", in_channels=3).eval()
    new_blocks = grow_deeper(deep, shallow.state_dict())

    assert new_blocks == ["conv4.block3", "conv4.block4", "conv5.block2", "conv5.block3"]
    assert sum(p.numel() for p in deep.parameters()) > 1.5 * sum(
        p.numel() for p in shallow.parameters()
    )
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(deep(x), shallow(x), atol=1e-5, rtol=1e-5)
    # The new blocks learn: their last convolution gets a gradient.
    deep.train()
    deep(x).square().mean().backward()
    assert deep.conv5.block3.convs.conv2.weight.grad.abs().sum() > 0


def test_growing_refuses_weights_of_another_shape() -> None:
    import pytest

    from ternaus_backend.errors import ModelError
    from ternaus_backend.models.adapt import grow_deeper

    with torch.device("meta"):
        eleven_bands = create_model("resnet_light", in_channels=11).state_dict()
    deep = create_model("resnet_light_deep", in_channels=3)
    with pytest.raises(ModelError, match="conv1.conv1.weight"):
        grow_deeper(deep, eleven_bands)
