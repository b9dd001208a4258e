"""Adapting trained weights to another network for fine-tuning: another number of input bands
(11-band weights -> RGB imagery), or a deeper encoder grown from a shallower one."""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import nn

from ternaus_backend.errors import ModelError

StateDict = dict[str, torch.Tensor]


def _first_conv_key(state: StateDict) -> str:
    for key, tensor in state.items():
        if key.endswith("weight") and tensor.dim() == 4:
            return key
    raise ModelError("no convolution weight found: cannot change the number of input bands")


def adapt_weight(
    weight: torch.Tensor, new_in_channels: int, mode: Literal["zeros", "mean"] = "zeros"
) -> torch.Tensor:
    """A first-layer conv weight (out, in, kh, kw) widened or narrowed to ``new_in_channels``.

    The existing input channels keep their filters in order (RGB first in our band layouts).
    Narrowing keeps the first ``new_in_channels`` filters (11 -> 3 keeps RGB). Widening adds
    channels initialised by ``mode``:

    - ``"zeros"`` (default): new bands start with zero filters, so the network initially computes
      exactly what it did on the old bands; fine-tuning then learns to use the new bands (their
      gradients are not zero).
    - ``"mean"``: new bands get the mean of the old filters, and all filters are scaled by
      ``old / new`` so the first layer's response to similar-looking bands keeps its magnitude.
    """
    old_in_channels = weight.shape[1]
    if new_in_channels < 1:
        raise ModelError(f"a network needs at least one input band, got {new_in_channels}")
    if new_in_channels <= old_in_channels:
        return weight[:, :new_in_channels].clone()
    extra = new_in_channels - old_in_channels
    if mode == "zeros":
        added = weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])
        return torch.cat([weight, added], 1)
    if mode == "mean":
        added = weight.mean(1, keepdim=True).expand(-1, extra, -1, -1)
        return torch.cat([weight, added], 1) * (old_in_channels / new_in_channels)
    raise ModelError(f"unknown mode {mode!r}: use 'zeros' or 'mean'")


@overload
def adapt_first_layer(target: nn.Module, new_in_channels: int, mode: str = ...) -> nn.Module: ...
@overload
def adapt_first_layer(target: StateDict, new_in_channels: int, mode: str = ...) -> StateDict: ...


def adapt_first_layer(target, new_in_channels, mode="zeros"):
    """Change the input band count of a network (in place) or of a state_dict (a new dict).

    The first convolution in state_dict order is changed by :func:`adapt_weight` (read its
    docstring for ``mode``). A network's ``in_channels`` attribute is updated; its ``.metadata``,
    if any, is dropped, since the band names and normalisation must be chosen anew (use
    ``registry.metadata_for``).
    """
    if isinstance(target, nn.Module):
        key = _first_conv_key(target.state_dict())
        owner_name, _, _ = key.rpartition(".")
        old = target.get_submodule(owner_name)
        if not isinstance(old, nn.Conv2d) or old.groups != 1:
            raise ModelError(f"{owner_name} is not a plain convolution: cannot adapt it")
        new = nn.Conv2d(
            new_in_channels,
            old.out_channels,
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(adapt_weight(old.weight.detach(), new_in_channels, mode))
            if old.bias is not None:
                new.bias.copy_(old.bias)
        parent_name, _, child_name = owner_name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child_name, new)
        if hasattr(target, "in_channels"):
            target.in_channels = new_in_channels
        if hasattr(target, "metadata"):
            del target.metadata
        return target
    state = dict(target)
    key = _first_conv_key(state)
    state[key] = adapt_weight(state[key], new_in_channels, mode)
    return state


def grow_deeper(target: nn.Module, source_state: StateDict) -> list[str]:
    """Load ``source_state`` into ``target``, a network with extra residual blocks, so that it
    computes exactly what the source network did; returns the names of the new blocks.

    Every tensor of the source must exist in ``target`` with the same shape. A new block is a
    pre-activation residual block with an identity shortcut; its last convolution starts at zero,
    so it adds nothing until fine-tuning trains it (its gradients are not zero).
    """
    state = target.state_dict()
    wrong = [
        key
        for key, value in source_state.items()
        if key not in state or state[key].shape != value.shape
    ]
    if wrong:
        raise ModelError(
            "the init model's weights do not fit the deeper network: " + ", ".join(wrong[:5]),
            details="a deeper encoder grows from its shallower version (resnet_light -> "
            "resnet_light_deep) with the same bands and decoder width",
        )
    new_keys = [key for key in state if key not in source_state]
    new_blocks = sorted({key.rsplit(".convs.", 1)[0] for key in new_keys if ".convs." in key})
    others = [k for k in new_keys if not any(k.startswith(b + ".") for b in new_blocks)]
    if others:
        raise ModelError(f"the deeper network has new tensors outside residual blocks: {others}")
    target.load_state_dict(source_state, strict=False)
    with torch.no_grad():
        for block in new_blocks:
            target.get_submodule(block).convs.conv2.weight.zero_()
    return new_blocks
