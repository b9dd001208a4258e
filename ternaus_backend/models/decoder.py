"""The TernausNetV2 two-head U-Net: any five-stage encoder behind the reference decoder.

An encoder is five modules registered as ``conv1`` .. ``conv5`` whose outputs have ``channels``
c1..c5 at strides 1, 2, 4, 8, 16. ``conv1`` sees the input; every later stage and the centre see
the previous output after ``MaxPool2d(2, 2)``. The decoder (``num_filters`` = nf) is, as in the
reference (is_deconv=False), where every block first upsamples x2 (nearest) and concatenates
[decoder, encoder]:

    center  c5        -> nf*8 -> nf*8        dec3  c3 + nf*8 -> nf*2 -> nf*2
    dec5    c5 + nf*8 -> nf*8 -> nf*8        dec2  c2 + nf*2 -> nf*2 -> nf
    dec4    c4 + nf*8 -> nf*8 -> nf*8        dec1  c1 + nf -> nf (3x3 + ReLU, no upsampling)
    final   1x1 conv nf -> num_classes (logits: body, touching border)

Parameter names: ``center.block.1.conv.*``, ``dec5.block.2.conv.*``, ``dec1.conv.*``, ``final.*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ternaus_backend.errors import InputError

NUM_LEVELS = 5
SIZE_MULTIPLE = 2**NUM_LEVELS  # four pooled stages + the pooled centre


class ConvRelu(nn.Module):
    """3x3 convolution with bias, padding 1, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x))


# For one axis: output row 2i + a of a 3-tap convolution over a nearest-upsampled input reads the
# input rows i - 1 + a and i + a with these sums of the three taps.
_PHASE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def upsample2x_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``conv2d(upsample_nearest_2x(x), weight, bias, padding=1)`` without the upsampled tensor.

    Each of the four output phases (row and column parity) is a 2x2 convolution of ``x`` whose
    taps are sums of the 3x3 taps, so the work is 16/36 of the direct form and the large
    upsampled input is never built. Same result up to float rounding.
    """
    out_channels, in_channels = weight.shape[:2]
    taps = torch.tensor(_PHASE_TAPS, dtype=weight.dtype, device=weight.device)
    kernels = torch.einsum("aru,oiuv,bcv->oabirc", taps, weight, taps)
    kernels = kernels.reshape(out_channels * 4, in_channels, 2, 2)
    phase_bias = None if bias is None else bias.repeat_interleave(4)
    phases = F.conv2d(x, kernels, phase_bias, padding=1)  # (n, 4 * out, h + 1, w + 1)
    n, _, h1, w1 = phases.shape
    height, width = h1 - 1, w1 - 1
    phases = phases.view(n, out_channels, 2, 2, h1, w1)
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    out = torch.empty(
        (n, out_channels, 2 * height, 2 * width),
        dtype=phases.dtype,
        device=phases.device,
        memory_format=layout,
    )
    interleaved = out.view(n, out_channels, height, 2, width, 2)
    for a in (0, 1):
        for b in (0, 1):
            interleaved[:, :, :, a, :, b] = phases[:, :, a, b, a : a + height, b : b + width]
    return out


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class DecoderBlock(nn.Module):
    """Nearest upsampling x2, then two :class:`ConvRelu` (``block.1``, ``block.2``).

    ``forward`` fuses the upsampling into the first convolution (:func:`upsample2x_conv3x3`);
    ``self.block(x)`` is the literal reference form.
    """

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvRelu(in_channels, middle_channels),
            ConvRelu(middle_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.block[1], self.block[2]
        y = upsample2x_conv3x3(x, first.conv.weight, first.conv.bias)
        return second(first.activation(y))


class TwoHeadUNet(nn.Module):
    """Encoder stages ``conv1``..``conv5`` + the reference decoder -> (N, classes, H, W) logits.

    Args:
        encoder_name: registry name of the encoder (kept as ``encoder_name``).
        stages: the five encoder stages (see the module docstring).
        channels: their output channels c1..c5.
        in_channels: input bands expected by ``stages[0]``.
        num_filters: decoder width nf.
        num_classes: output maps (2: building body, touching border).
    """

    #: run in channels-last layout on CPU (much faster for narrow convolutions; see light.py)
    channels_last_on_cpu: bool = False

    def __init__(
        self,
        encoder_name: str,
        stages: Sequence[nn.Module],
        channels: Sequence[int],
        in_channels: int,
        num_filters: int,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        if len(stages) != NUM_LEVELS or len(channels) != NUM_LEVELS:
            raise ValueError(f"an encoder needs {NUM_LEVELS} stages and channel counts")
        self.encoder_name = encoder_name
        self.in_channels = in_channels
        self.num_filters = num_filters
        self.num_classes = num_classes
        self.encoder_channels = tuple(channels)

        for index, stage in enumerate(stages, start=1):
            self.add_module(f"conv{index}", stage)
        self.pool = nn.MaxPool2d(2, 2)

        c1, c2, c3, c4, c5 = channels
        nf = num_filters
        self.center = DecoderBlock(c5, nf * 8, nf * 8)
        self.dec5 = DecoderBlock(c5 + nf * 8, nf * 8, nf * 8)
        self.dec4 = DecoderBlock(c4 + nf * 8, nf * 8, nf * 8)
        self.dec3 = DecoderBlock(c3 + nf * 8, nf * 2, nf * 2)
        self.dec2 = DecoderBlock(c2 + nf * 2, nf * 2, nf)
        self.dec1 = ConvRelu(c1 + nf, nf)
        self.final = nn.Conv2d(nf, num_classes, 1)

    def stages(self) -> list[nn.Module]:
        """The encoder stages ``conv1``..``conv5`` in order."""
        return [getattr(self, f"conv{index}") for index in range(1, NUM_LEVELS + 1)]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` for a batch the network cannot take."""
        if x.dim() != 4:
            raise InputError(
                f"expected a (batch, bands, height, width) tensor, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"this model expects {self.in_channels} input bands, got {x.shape[1]}",
                details="check the band mapping in the model metadata",
            )
        height, width = x.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise InputError(
                f"input size {height}x{width} is not a multiple of {SIZE_MULTIPLE}: "
                f"pad your images to a multiple of {SIZE_MULTIPLE}"
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder features c1..c5 (strides 1..16)."""
        features = [self.conv1(x)]
        for stage in self.stages()[1:]:
            features.append(stage(self.pool(features[-1])))
        return features

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits from the five encoder features."""
        f1, f2, f3, f4, f5 = features
        center = self.center(self.pool(f5))
        d5 = self.dec5(torch.cat([center, f5], 1))
        d4 = self.dec4(torch.cat([d5, f4], 1))
        d3 = self.dec3(torch.cat([d4, f3], 1))
        d2 = self.dec2(torch.cat([d3, f2], 1))
        d1 = self.dec1(torch.cat([d2, f1], 1))
        return self.final(d1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.channels_last_on_cpu and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
            return self.decode(self.encode(x)).contiguous()
        return self.decode(self.encode(x))
