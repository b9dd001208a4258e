"""BENCHMARK REFERENCE ONLY: the authors' notebook approach, written by us, to time against.

Not part of the product (``ternaus predict`` and everything else use ``ternaus_backend.pipeline``).
It does what the TernausNetV2 demo does, scaled to a whole scene (see
../shared/reference/README.md): read the whole RGB and multispectral rasters (same grid), scale
them (RGB per-channel min-max, MS / 2047, then mean/std), pad by reflection (reflect-101) to a
multiple of the tile, cut into non-overlapping tiles, run the network tile by tile (eager PyTorch,
the model as loaded), sigmoid; mask = body > t, seeds = mask and border < 0.5 (4-connected),
plain watershed of the mask from the seeds (8-connected), instances under the minimum area
dropped; outlines with rasterio ``shapes``; GeoPackage.

    python benchmarks/reference_baseline.py --rgb RGB.tif --ms MS.tif --model M --out OUT.gpkg
"""

from __future__ import annotations

import argparse
import time

import fiona
import numpy as np
import rasterio
import torch
from rasterio.features import shapes
from scipy.special import expit
from skimage.measure import label
from skimage.segmentation import watershed

from ternaus_backend.models.model_file import load_model

TILE_PX = 512


def read_scene(rgb_path: str, ms_path: str | None) -> tuple[np.ndarray, rasterio.Affine, object]:
    """All bands (C, h, w) float32 on the RGB grid, with its transform and CRS."""
    with rasterio.open(rgb_path) as src:
        rgb = src.read([1, 2, 3]).astype(np.float32)
        transform, crs = src.transform, src.crs
    low = rgb.min(axis=(1, 2), keepdims=True)
    high = rgb.max(axis=(1, 2), keepdims=True)
    rgb = (rgb - low) / np.maximum(high - low, 1e-6)
    bands = [rgb]
    if ms_path is not None:
        with rasterio.open(ms_path) as src:
            bands.append(src.read().astype(np.float32) / 2047.0)
    return np.concatenate(bands), transform, crs


def normalise(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    return (image - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]


def predict_tiles(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Sigmoid probabilities (2, h, w) from non-overlapping reflect-padded tiles."""
    _, h, w = image.shape
    pad_h, pad_w = -h % TILE_PX, -w % TILE_PX
    padded = np.pad(
        image,
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)),
        mode="reflect",
    )
    out = np.zeros((2, *padded.shape[1:]), np.float32)
    with torch.no_grad():
        for y in range(0, padded.shape[1], TILE_PX):
            for x in range(0, padded.shape[2], TILE_PX):
                tile = torch.from_numpy(padded[None, :, y : y + TILE_PX, x : x + TILE_PX].copy())
                out[:, y : y + TILE_PX, x : x + TILE_PX] = expit(model(tile)[0].numpy())
    return out[:, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]


def instances(probs: np.ndarray, body_t: float, border_t: float, min_area: int) -> np.ndarray:
    mask = probs[0] > body_t
    seeds = label(mask & (probs[1] < border_t), connectivity=1)
    labels = watershed(mask, seeds, mask=mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    labels[(sizes < min_area)[labels]] = 0
    return labels.astype(np.int32)


def write_polygons(labels: np.ndarray, transform, crs, out: str) -> int:
    schema = {"geometry": "Polygon", "properties": {"id": "int"}}
    count = 0
    with fiona.open(
        out, "w", driver="GPKG", schema=schema, crs_wkt=crs.to_wkt() if crs else None
    ) as sink:
        for geom, value in shapes(labels, mask=labels > 0, connectivity=8, transform=transform):
            count += 1
            sink.write({"geometry": geom, "properties": {"id": int(value)}})
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rgb", required=True)
    parser.add_argument("--ms")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model(args.model, device="cpu").eval()
    meta = model.metadata
    image, transform, crs = read_scene(args.rgb, args.ms)
    probs = predict_tiles(model, normalise(image, meta.normalization.mean, meta.normalization.std))
    t = meta.thresholds
    count = write_polygons(
        instances(probs, t.body, t.border, t.min_area_px), transform, crs, args.out
    )
    print(f"{count} polygons in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
