"""Light encoders for CPUs and the embedded default model.

A light encoder has the same five-level interface as WiderResNet-38 (``conv1``..``conv5``, strides
1..16, max pooling between stages), so it sits behind the same :class:`TwoHeadUNet` decoder.
``resnet_light``: a cheap full-resolution stem (3x3 conv + ABN) and small pre-activation residual
stages, the same block type as WiderResNet-38, only narrower and shallower: widths 16, 32, 64, 128,
256, residual blocks 1, 1, 2, 1, decoder nf = 16; 3.1 M parameters (12 MB as float32). About
14x faster than WiderResNet-38 on a 2-core CPU, and ``num_filters=8`` about 24-28x (2.1 M
parameters); the decoder's full-resolution layers dominate its time
(``tests/models/bench_speed.py`` measures it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from ternaus_backend.models.abn import make_abn
from ternaus_backend.models.decoder import TwoHeadUNet
from ternaus_backend.models.ternausnetv2 import PreActBlock, conv3x3


@dataclass(frozen=True)
class LightEncoderSpec:
    """Widths c1..c5 and residual blocks per pooled stage (conv2..conv5)."""

    channels: tuple[int, int, int, int, int]
    blocks: tuple[int, int, int, int]
    num_filters: int = 16


RESNET_LIGHT = LightEncoderSpec(channels=(16, 32, 64, 128, 256), blocks=(1, 1, 2, 1))
#: ``resnet_light`` with two more residual blocks at 1/8 and two at 1/16 of the resolution: more
#: context and capacity where the pixels are few (6.0 M parameters, ~1.2x the time of
#: ``resnet_light``, still over 10x faster than WiderResNet-38).
RESNET_LIGHT_DEEP = LightEncoderSpec(channels=(16, 32, 64, 128, 256), blocks=(1, 1, 4, 3))


def light_stages(
    in_channels: int, spec: LightEncoderSpec = RESNET_LIGHT
) -> tuple[list[nn.Module], tuple[int, ...]]:
    """The five stages of a light encoder and their output channels."""
    stem_channels = spec.channels[0]
    stem = nn.Sequential(
        OrderedDict(
            [("conv1", conv3x3(in_channels, stem_channels)), ("bn1", make_abn(stem_channels))]
        )
    )
    stages: list[nn.Module] = [stem]
    previous = stem_channels
    for width, num_blocks in zip(spec.channels[1:], spec.blocks, strict=True):
        blocks = OrderedDict()
        for index in range(1, num_blocks + 1):
            blocks[f"block{index}"] = PreActBlock(previous, (width, width))
            previous = width
        stages.append(nn.Sequential(blocks))
    return stages, spec.channels


class LightTernausNet(TwoHeadUNet):
    """The TernausNetV2 decoder behind a light encoder (default ``resnet_light``, nf = 16).

    On CPU it runs in channels-last layout: about 1.5x faster for its narrow convolutions.
    """

    channels_last_on_cpu = True

    def __init__(
        self,
        num_classes: int = 2,
        num_filters: int | None = None,
        in_channels: int = 3,
        encoder_name: str = "resnet_light",
        spec: LightEncoderSpec = RESNET_LIGHT,
    ) -> None:
        stages, channels = light_stages(in_channels, spec)
        num_filters = spec.num_filters if num_filters is None else num_filters
        super().__init__(encoder_name, stages, channels, in_channels, num_filters, num_classes)
