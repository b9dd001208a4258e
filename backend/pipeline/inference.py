"""Running the network over overlapping windows and stitching blended logits to disk.

Windows are read and normalised in a background thread while the network runs on the previous
batch. Weighted logits are accumulated in a strip buffer one window-row tall; rows that no later
window touches are turned into probabilities and written to the ``ProbabilityStore``. Memory is
therefore bounded by (tile height x raster width), independent of the raster's height.

Flip test-time augmentation (``tta=True``): each window also runs flipped left-right, upside down
and both; the flips are undone and the four probability maps averaged (then turned back into
logits for the blending), at four times the network's work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from scipy.special import expit

from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.raster import RasterInputs
from ternaus_backend.pipeline.store import ProbabilityStore
from ternaus_backend.pipeline.windows import WindowGrid, blend_weights
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress


@dataclass
class Batch:
    """Normalised windows ready for the network."""

    positions: list[tuple[int, int, int]]  # (row_index, y0, x0)
    images: np.ndarray  # (n, C, tile_h, tile_w) float32
    valid: np.ndarray  # (n, tile_h, tile_w) bool


def read_window(
    inputs: RasterInputs, normalizer: Normalizer, y0: int, x0: int, tile_h: int, tile_w: int
) -> tuple[np.ndarray, np.ndarray]:
    """One normalised window (C, tile_h, tile_w) and its validity; reflect-padded past the grid."""
    h = min(tile_h, inputs.grid.height - y0)
    w = min(tile_w, inputs.grid.width - x0)
    window = Window(x0, y0, w, h)
    raw, valid = inputs.read_masked(window)
    image = normalizer(raw)
    image[:, ~valid] = 0.0
    if (h, w) != (tile_h, tile_w):
        pad = ((0, 0), (0, tile_h - h), (0, tile_w - w))
        mode = "reflect" if min(h, w) > 1 else "edge"
        image = np.pad(image, pad, mode=mode)
        valid = np.pad(valid, pad[1:], mode="constant", constant_values=False)
    return image, valid


def _batches(
    inputs: RasterInputs, normalizer: Normalizer, grid: WindowGrid, batch_size: int
) -> Iterator[Batch]:
    positions = list(grid)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        pairs = [
            read_window(inputs, normalizer, y0, x0, grid.tile_h, grid.tile_w) for _, y0, x0 in chunk
        ]
        yield Batch(chunk, np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


def _prefetched(iterator: Iterator[Batch]) -> Iterator[Batch]:
    """Prepares the next batch in a thread while the caller works on the current one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(next, iterator, None)
        while True:
            batch = future.result()
            if batch is None:
                return
            future = pool.submit(next, iterator, None)
            yield batch


def run_network(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Logits (n, classes, h, w) float32; mixed precision on CUDA."""
    x = torch.from_numpy(images).to(device, non_blocking=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        logits = model(x)
    return logits.float().cpu().numpy()


#: The flips of flip TTA, as axes of a (n, C, h, w) batch: identity, left-right, upside down, both.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
#: Probabilities are kept inside [eps, 1 - eps] before they become logits again.
_TTA_EPS = 1e-6


def run_network_tta(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Logits (n, classes, h, w) of the probabilities averaged over :data:`TTA_FLIPS`.

    Each flipped batch runs on its own (memory as without TTA); its output is flipped back
    before averaging, so the result is exactly flip-equivariant.
    """
    total: np.ndarray | None = None
    for axes in TTA_FLIPS:
        flipped = np.ascontiguousarray(np.flip(images, axes)) if axes else images
        probs = expit(run_network(model, flipped, device))
        if axes:
            probs = np.flip(probs, axes)
        total = probs if total is None else total + probs
    mean = np.clip(total / len(TTA_FLIPS), _TTA_EPS, 1.0 - _TTA_EPS)
    return np.log(mean / (1.0 - mean)).astype(np.float32)


FLUSH_CHUNK_PX = 2048


class StripStitcher:
    """Accumulates weighted logits of one window-row and flushes finished rows to the store."""

    def __init__(
        self, store: ProbabilityStore, grid: WindowGrid, overlap_px: int, classes: int
    ) -> None:
        self.store, self.grid = store, grid
        self.weights = blend_weights(grid.tile_h, grid.tile_w, overlap_px)
        self.acc = np.zeros((classes, grid.tile_h, grid.width), np.float32)
        self.wsum = np.zeros((grid.tile_h, grid.width), np.float32)
        self.top = 0  # raster row of the buffer's first row

    def add(self, y0: int, x0: int, logits: np.ndarray, valid: np.ndarray) -> None:
        """Adds one window's logits (classes, tile_h, tile_w) at raster position (y0, x0)."""
        self._advance_to(y0)
        h = min(self.grid.tile_h, self.grid.height - y0)
        w = min(self.grid.tile_w, self.grid.width - x0)
        r = y0 - self.top
        weight = self.weights[:h, :w] * valid[:h, :w]
        self.acc[:, r : r + h, x0 : x0 + w] += logits[:, :h, :w] * weight
        self.wsum[r : r + h, x0 : x0 + w] += weight

    def _advance_to(self, y0: int) -> None:
        if y0 > self.top:
            self._flush(min(y0, self.grid.height) - self.top)

    def _flush(self, rows: int) -> None:
        """Writes the first ``rows`` buffer rows as probabilities and shifts the rest up.

        Works in column chunks so no temporary grows with the raster's width.
        """
        if rows <= 0:
            return
        keep = self.acc.shape[1] - rows
        for c0 in range(0, self.grid.width, FLUSH_CHUNK_PX):
            cols = slice(c0, min(c0 + FLUSH_CHUNK_PX, self.grid.width))
            wsum = self.wsum[:rows, cols]
            logits = self.acc[:, :rows, cols] / np.maximum(wsum, 1e-6)
            probs = np.nan_to_num(
                expit(logits), nan=0.0
            )  # an fp16 overflow must not poison the map
            probs[:, wsum <= 0] = 0.0  # nothing valid saw these pixels
            self.store.write_block(self.top, c0, probs)
            for r0 in range(0, keep, rows):  # source and target rows never overlap
                r1 = min(r0 + rows, keep)
                self.acc[:, r0:r1, cols] = self.acc[:, r0 + rows : r1 + rows, cols]
                self.wsum[r0:r1, cols] = self.wsum[r0 + rows : r1 + rows, cols]
        self.acc[:, max(keep, 0) :] = 0.0
        self.wsum[max(keep, 0) :] = 0.0
        self.top += rows

    def finish(self) -> None:
        self._flush(self.grid.height - self.top)


def predict_probabilities(
    model: torch.nn.Module,
    inputs: RasterInputs,
    normalizer: Normalizer,
    store: ProbabilityStore,
    grid: WindowGrid,
    overlap_px: int,
    batch_size: int,
    device: torch.device,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    tta: bool = False,
) -> None:
    """Fills ``store`` with the stitched body/border probabilities of the whole grid.

    ``tta``: average each window's probabilities over flips (:func:`run_network_tta`).
    """
    network = run_network_tta if tta else run_network
    classes = store.shape[2]
    stitcher = StripStitcher(store, grid, overlap_px, classes)
    done = 0
    progress(ProgressEvent("infer", 0, grid.count))
    for batch in _prefetched(_batches(inputs, normalizer, grid, batch_size)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        keep = batch.valid.reshape(len(batch.positions), -1).any(axis=1)
        logits = np.zeros((len(batch.positions), classes, grid.tile_h, grid.tile_w), np.float32)
        if keep.any():  # all-nodata windows never reach the network
            logits[keep] = network(model, batch.images[keep], device)
        for (_, y0, x0), window_logits, valid in zip(
            batch.positions, logits, batch.valid, strict=True
        ):
            stitcher.add(y0, x0, window_logits, valid)
        done += len(batch.positions)
        progress(ProgressEvent("infer", done, grid.count))
    stitcher.finish()
