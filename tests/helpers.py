"""Small seeded rasters and stand-in models for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from ternaus_backend.models.metadata import BandScaling, ModelMetadata, Normalization

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str = "EPSG:32723",
    origin=(500000.0, 7450000.0),
    pixel: float = 0.5,
    nodata: float | None = None,
) -> Path:
    """A GeoTIFF of ``data`` (bands, h, w) with a north-up transform."""
    bands, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(origin[0], origin[1], pixel, pixel),
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def rectangles_image(height: int, width: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """uint8 RGB: dark ground, bright roofs in the (row0, col0, row1, col1) boxes."""
    img = np.full((3, height, width), 40, np.uint8)
    for r0, c0, r1, c1 in boxes:
        img[:, r0:r1, c0:c1] = 220
    return img


class ThresholdModel(torch.nn.Module):
    """A stand-in network: body logit is high where the red channel is bright, no borders.

    Used where a test needs a model whose answer is known exactly; tests of the real networks
    use the real ones.
    """

    def __init__(self, in_channels: int = 3, tile_size_px: int = 128, overlap_px: int = 32) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(8.0), requires_grad=False)
        self.metadata = ModelMetadata(
            name="threshold-test",
            encoder="threshold",
            in_channels=in_channels,
            band_names=[f"b{i}" for i in range(in_channels)],
            normalization=Normalization(
                rgb=BandScaling(method="divide", divisor=255.0),
                ms=BandScaling(method="divide", divisor=2047.0) if in_channels > 3 else None,
                mean=[0.5] * in_channels,
                std=[0.25] * in_channels,
            ),
            resolution_m=0.5,
            tile_size_px=tile_size_px,
            overlap_px=overlap_px,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = self.scale * x[:, :1]
        border = torch.full_like(body, -10.0)
        return torch.cat([body, border], dim=1)
