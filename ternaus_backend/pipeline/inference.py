"""Running the network over overlapping windows and stitching blended logits to disk.

Three stages run at once (issue 11): windows are read and normalised in a background thread
into two reused buffers while the network runs on the previous batch, and a third thread blends
its logits into a strip buffer one window-row tall; rows that no later window touches are turned
into probabilities and written to the ``ProbabilityStore`` (and reported, so instances can be
found above while the network works below). Memory is therefore bounded by (tile height x raster
width), independent of the raster's height. How the network runs (precision, batch, layout) is
the device plan's (:mod:`.engine`).

Flip test-time augmentation (``tta=True``): each window also runs flipped left-right, upside down
and both; the flips are undone and the four probability maps averaged (then turned back into
logits for the blending), at four times the network's work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from scipy.special import expit

from ternaus_backend.pipeline.engine import (
    DevicePlan,
    autocast_for,
    inference_network,
    plan_device,
)
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.raster import RasterInputs
from ternaus_backend.pipeline.store import ProbabilityStore, quantise_into
from ternaus_backend.pipeline.windows import WindowGrid, blend_weights
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress

#: How a batch of windows becomes logits: ``(model, images, device, plan) -> logits``.
NetworkFn = Callable[..., np.ndarray]


@dataclass
class Batch:
    """Normalised windows ready for the network (views into reused buffers)."""

    positions: list[tuple[int, int, int]]  # (row_index, y0, x0)
    images: np.ndarray  # (n, C, tile_h, tile_w) float32
    valid: np.ndarray  # (n, tile_h, tile_w) bool


class BatchBuffers:
    """Two sets of batch buffers, filled in turn: one is read into while the network runs on
    the other (pinned host memory for fast, non-blocking copies to a GPU)."""

    def __init__(self, batch_size: int, channels: int, grid: WindowGrid, pin: bool) -> None:
        shape = (batch_size, channels, grid.tile_h, grid.tile_w)
        self.images = [_host_array(shape, pin) for _ in range(2)]
        self.valid = [np.zeros((batch_size, grid.tile_h, grid.tile_w), bool) for _ in range(2)]

    def slot(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index % 2], self.valid[index % 2]


def _host_array(shape: tuple[int, ...], pin: bool) -> np.ndarray:
    """A float32 array, in page-locked memory when ``pin`` (CUDA only)."""
    if pin:
        return torch.empty(shape, dtype=torch.float32).pin_memory().numpy()
    return np.empty(shape, np.float32)


def read_window_into(
    inputs: RasterInputs,
    normalizer: Normalizer,
    y0: int,
    x0: int,
    image: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Reads one window, normalised, into ``image`` (C, tile_h, tile_w) and its validity into
    ``valid``; reflect-padded past the grid, 0 where invalid."""
    tile_h, tile_w = valid.shape
    h = min(tile_h, inputs.grid.height - y0)
    w = min(tile_w, inputs.grid.width - x0)
    raw, ok = inputs.read_masked(Window(x0, y0, w, h))
    image[:, :h, :w] = normalizer.apply_(raw)
    image[:, :h, :w][:, ~ok] = 0.0
    valid[:h, :w] = ok
    if (h, w) != (tile_h, tile_w):
        _pad_in_place(image, h, w)
        valid[h:, :] = False
        valid[:, w:] = False


def _pad_in_place(image: np.ndarray, h: int, w: int) -> None:
    """Fills ``image`` past row ``h`` and column ``w`` by reflection (edge for 1-px sides)."""
    tile_h, tile_w = image.shape[1:]
    pad = ((0, 0), (0, tile_h - h), (0, tile_w - w))
    mode = "reflect" if min(h, w) > 1 else "edge"
    image[:] = np.pad(image[:, :h, :w], pad, mode=mode)


def read_window(
    inputs: RasterInputs, normalizer: Normalizer, y0: int, x0: int, tile_h: int, tile_w: int
) -> tuple[np.ndarray, np.ndarray]:
    """One normalised window (C, tile_h, tile_w) and its validity; reflect-padded past the grid."""
    image = np.empty((inputs.band_count, tile_h, tile_w), np.float32)
    valid = np.zeros((tile_h, tile_w), bool)
    read_window_into(inputs, normalizer, y0, x0, image, valid)
    return image, valid


def _fill(inputs, normalizer, chunk, images, valid) -> Batch:
    for k, (_, y0, x0) in enumerate(chunk):
        read_window_into(inputs, normalizer, y0, x0, images[k], valid[k])
    n = len(chunk)
    return Batch(chunk, images[:n], valid[:n])


def _batches(
    inputs: RasterInputs,
    normalizer: Normalizer,
    grid: WindowGrid,
    batch_size: int,
    pin: bool = False,
) -> Iterator[Batch]:
    """Batches read in a background thread into two reused buffers, one batch ahead."""
    positions = list(grid)
    chunks = [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
    buffers = BatchBuffers(batch_size, inputs.band_count, grid, pin)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ternaus-read") as pool:
        pending = None
        for index, chunk in enumerate(chunks):
            if pending is None:
                pending = pool.submit(_fill, inputs, normalizer, chunk, *buffers.slot(index))
            batch = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(
                    _fill, inputs, normalizer, chunks[index + 1], *buffers.slot(index + 1)
                )
            else:
                pending = None
            yield batch


def run_network(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    plan: DevicePlan | None = None,
) -> np.ndarray:
    """Logits (n, classes, h, w) float32. ``plan`` sets precision and layout (default: float32
    on a CPU, as a network not prepared by :func:`~.engine.inference_network` needs; mixed on
    CUDA)."""
    cpu_default = "float32" if device.type == "cpu" else None
    plan = plan or plan_device(device, "", 32, batch_size=1, precision=cpu_default)
    x = torch.from_numpy(images).to(plan.device, non_blocking=plan.pin_memory)
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast_for(plan):
        logits = model(x)
    return logits.float().cpu().numpy()


#: The flips of flip TTA, as axes of a (n, C, h, w) batch: identity, left-right, upside down, both.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
#: Probabilities are kept inside [eps, 1 - eps] before they become logits again.
_TTA_EPS = 1e-6


def run_network_tta(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    plan: DevicePlan | None = None,
) -> np.ndarray:
    """Logits (n, classes, h, w) of the probabilities averaged over :data:`TTA_FLIPS`.

    Each flipped batch runs on its own (memory as without TTA); its output is flipped back
    before averaging, so the result is exactly flip-equivariant.
    """
    total: np.ndarray | None = None
    for probs in flip_probabilities(model, images, device, plan):
        total = probs if total is None else total + probs
    return _logits(total / len(TTA_FLIPS))


def flip_probabilities(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    plan: DevicePlan | None = None,
) -> Iterator[np.ndarray]:
    """The probabilities (n, classes, h, w) of each flip of :data:`TTA_FLIPS` in turn, flipped
    back (each flipped batch runs on its own: memory as without TTA)."""
    for axes in TTA_FLIPS:
        flipped = np.ascontiguousarray(np.flip(images, axes)) if axes else images
        probs = expit(run_network(model, flipped, device, plan))
        yield np.flip(probs, axes) if axes else probs


def _logits(probabilities: np.ndarray) -> np.ndarray:
    mean = np.clip(probabilities, _TTA_EPS, 1.0 - _TTA_EPS)
    return np.log(mean / (1.0 - mean)).astype(np.float32)


#: Logit of the flip-disagreement channel: a pixel's value is about 1 (or 0) once blended.
_DISAGREE_LOGIT = 8.0


def flip_disagreement_network(body_threshold: float) -> NetworkFn:
    """A network function for :func:`predict_probabilities` whose logits (n, classes + 1, h, w)
    are those of :func:`run_network_tta` (the flip-averaged maps), then one more channel: about
    1 where the flips disagree on the body (some at or above ``body_threshold``, some below),
    about 0 where they agree (blended across window overlaps like the other channels)."""

    def network(model, images, device, plan=None) -> np.ndarray:
        total = low = high = None
        for probs in flip_probabilities(model, images, device, plan):
            body = probs[:, :1]
            if total is None:
                total, low, high = probs.copy(), body.copy(), body.copy()
            else:
                total += probs
                np.minimum(low, body, out=low)
                np.maximum(high, body, out=high)
        disagree = (low < body_threshold) & (high >= body_threshold)
        extra = np.where(disagree, _DISAGREE_LOGIT, -_DISAGREE_LOGIT).astype(np.float32)
        return np.concatenate([_logits(total / len(TTA_FLIPS)), extra], axis=1)

    return network


FLUSH_CHUNK_PX = 2048
RowsDone = Callable[[int], None]


class StripStitcher:
    """Accumulates weighted logits of one window-row and flushes finished rows to the store.

    ``on_rows(n)`` is called after every flush with the number of raster rows now final in the
    store (so instances can be found for blocks above while the network works below).
    """

    def __init__(
        self,
        store: ProbabilityStore,
        grid: WindowGrid,
        overlap_px: int,
        classes: int,
        on_rows: RowsDone | None = None,
    ) -> None:
        self.store, self.grid = store, grid
        self.on_rows = on_rows or (lambda rows: None)
        self.weights = blend_weights(grid.tile_h, grid.tile_w, overlap_px)
        self.acc = np.zeros((classes, grid.tile_h, grid.width), np.float32)
        self.wsum = np.zeros((grid.tile_h, grid.width), np.float32)
        self.scratch = np.empty((classes, grid.tile_h, min(FLUSH_CHUNK_PX, grid.width)), np.float32)
        self.top = 0  # raster row of the buffer's first row

    def add_batch(self, positions, logits: np.ndarray, valid: np.ndarray) -> None:
        """Adds a batch's windows (logits (n, classes, tile_h, tile_w), overwritten)."""
        for (_, y0, x0), window_logits, window_valid in zip(positions, logits, valid, strict=True):
            self.add(y0, x0, window_logits, window_valid)

    def add(self, y0: int, x0: int, logits: np.ndarray, valid: np.ndarray) -> None:
        """Adds one window's logits (classes, tile_h, tile_w) at raster position (y0, x0);
        ``logits`` is used as scratch space."""
        self._advance_to(y0)
        h = min(self.grid.tile_h, self.grid.height - y0)
        w = min(self.grid.tile_w, self.grid.width - x0)
        r = y0 - self.top
        weight = self.weights[:h, :w] * valid[:h, :w]
        weighted = np.multiply(logits[:, :h, :w], weight, out=logits[:, :h, :w])
        self.acc[:, r : r + h, x0 : x0 + w] += weighted
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
        out = np.empty((rows, self.grid.width, self.acc.shape[0]), np.uint8)
        chunk_px = min(FLUSH_CHUNK_PX, self.scratch.shape[2])
        for c0 in range(0, self.grid.width, chunk_px):
            cols = slice(c0, min(c0 + chunk_px, self.grid.width))
            self._quantise(rows, cols, out[:, cols])
            for r0 in range(0, keep, rows):  # source and target rows never overlap
                r1 = min(r0 + rows, keep)
                self.acc[:, r0:r1, cols] = self.acc[:, r0 + rows : r1 + rows, cols]
                self.wsum[r0:r1, cols] = self.wsum[r0 + rows : r1 + rows, cols]
        self.acc[:, max(keep, 0) :] = 0.0
        self.wsum[max(keep, 0) :] = 0.0
        self.store.write_rows(self.top, out)
        self.top += rows
        self.on_rows(self.top)

    def _quantise(self, rows: int, cols: slice, out: np.ndarray) -> None:
        """Blended probabilities of buffer rows [0, rows) and ``cols`` into ``out`` (rows, cols,
        classes) uint8, as :meth:`ProbabilityStore.write_block` rounds them, in one scratch."""
        wsum = self.wsum[:rows, cols]
        probs = self.scratch[:, :rows, : wsum.shape[1]]
        np.divide(self.acc[:, :rows, cols], np.maximum(wsum, 1e-6), out=probs)
        expit(probs, out=probs)
        np.nan_to_num(probs, copy=False, nan=0.0)  # an fp16 overflow must not poison the map
        probs[:, wsum <= 0] = 0.0  # nothing valid saw these pixels
        quantise_into(probs, out)

    def finish(self) -> None:
        self._flush(self.grid.height - self.top)


def _batch_logits(network, model, batch: Batch, classes: int, plan: DevicePlan) -> np.ndarray:
    """Logits of a batch; all-nodata windows never reach the network (their logits are 0)."""
    keep = batch.valid.reshape(len(batch.positions), -1).any(axis=1)
    if keep.all():
        return network(model, batch.images, plan.device, plan)
    logits = np.zeros((len(keep), classes, *batch.images.shape[2:]), np.float32)
    if keep.any():
        logits[keep] = network(model, batch.images[keep], plan.device, plan)
    return logits


def predict_probabilities(
    model: torch.nn.Module,
    inputs: RasterInputs,
    normalizer: Normalizer,
    store: ProbabilityStore,
    grid: WindowGrid,
    overlap_px: int,
    batch_size: int | None,
    device: torch.device,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    tta: bool = False,
    plan: DevicePlan | None = None,
    on_rows: RowsDone | None = None,
    network: NetworkFn | None = None,
) -> None:
    """Fills ``store`` with the stitched body/border probabilities of the whole grid.

    Three stages run at once: reading the next batch (a thread), the network (this thread) and
    blending into the store (a thread; ``on_rows`` is called from it). ``tta``: average each
    window's probabilities over flips (:func:`run_network_tta`). ``plan``: how the network runs
    (default: chosen for ``device``). ``network``: another network function (its logits have
    the store's channels), e.g. :func:`flip_disagreement_network`'s.
    """
    if network is None:
        network = run_network_tta if tta else run_network
    encoder = getattr(getattr(model, "metadata", None), "encoder", "")
    plan = plan or plan_device(device, encoder, grid.tile_h, batch_size=batch_size)
    classes = store.shape[2]
    stitcher = StripStitcher(store, grid, overlap_px, classes, on_rows)
    done = 0
    progress(ProgressEvent("infer", 0, grid.count))
    with (
        inference_network(model, plan) as net,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ternaus-stitch") as stitch,
    ):
        pending: deque[Future] = deque()
        for batch in _batches(inputs, normalizer, grid, plan.batch_size, plan.pin_memory):
            if cancel is not None:
                cancel.raise_if_cancelled()
            logits = _batch_logits(network, net, batch, classes, plan)
            valid = batch.valid.copy()  # the buffer is refilled while the stitcher works
            pending.append(stitch.submit(stitcher.add_batch, batch.positions, logits, valid))
            while len(pending) > 2 or (pending and pending[0].done()):
                pending.popleft().result()
            done += len(batch.positions)
            progress(ProgressEvent("infer", done, grid.count))
        while pending:
            pending.popleft().result()
        stitch.submit(stitcher.finish).result()
