"""TernausNetV2: WiderResNet-38 encoder (In-Place ABN) + the two-head U-Net decoder.

Module names, shapes and ``state_dict`` order equal the authors' released network, so their
checkpoint loads strictly (see ``model_file``). Encoder: ``conv1.conv1`` (3x3, in -> 64, no bias),
then WiderResNet-38 modules mod2..mod5 as ``conv2``..``conv5`` with 3, 3, 6, 3 pre-activation
residual blocks and channels (128, 128), (256, 256), (512, 512), (512, 1024).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ternaus_backend.models.abn import is_inplace, make_abn
from ternaus_backend.models.decoder import TwoHeadUNet

WRN38_BLOCKS = (3, 3, 6, 3)
WRN38_STAGE_CHANNELS = ((128, 128), (256, 256), (512, 512), (512, 1024))
WRN38_STEM_CHANNELS = 64
WRN38_CHANNELS = (64, 128, 256, 512, 1024)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation block: ``bn1`` -> ``convs.conv1`` -> ``convs.bn2`` -> ``convs.conv2``.

    The shortcut is ``proj_conv`` (1x1) of the ``bn1`` output where the channel count changes,
    otherwise the raw input.
    """

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        middle, out = channels
        self.bn1 = make_abn(in_channels)
        self.convs = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", conv3x3(in_channels, middle)),
                    ("bn2", make_abn(middle)),
                    ("conv2", conv3x3(middle, out)),
                ]
            )
        )
        if in_channels != out:
            self.proj_conv = nn.Conv2d(in_channels, out, 1, bias=False)
        else:
            self.proj_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj_conv is not None:
            activated = self.bn1(x)
            shortcut = self.proj_conv(activated)
        else:
            shortcut = x.clone() if is_inplace(self.bn1) else x
            activated = self.bn1(x)
        return self.convs(activated) + shortcut


def wrn38_stages(in_channels: int = 11) -> tuple[list[nn.Module], tuple[int, ...]]:
    """The five WiderResNet-38 encoder stages and their output channels."""
    stem = nn.Sequential(OrderedDict([("conv1", conv3x3(in_channels, WRN38_STEM_CHANNELS))]))
    stages: list[nn.Module] = [stem]
    previous = WRN38_STEM_CHANNELS
    for num_blocks, channels in zip(WRN38_BLOCKS, WRN38_STAGE_CHANNELS, strict=True):
        blocks = OrderedDict()
        for index in range(1, num_blocks + 1):
            blocks[f"block{index}"] = PreActBlock(previous, channels)
            previous = channels[-1]
        stages.append(nn.Sequential(blocks))
    return stages, WRN38_CHANNELS


class TernausNetV2(TwoHeadUNet):
    """The reference TernausNetV2 (is_deconv=False); input sides must be multiples of 32."""

    def __init__(self, num_classes: int = 2, num_filters: int = 32, in_channels: int = 11) -> None:
        stages, channels = wrn38_stages(in_channels)
        super().__init__("wrn38", stages, channels, in_channels, num_filters, num_classes)
