"""Stitched probability maps kept on disk, so memory does not grow with the raster.

The maps are one raw uint8 file of shape (height, width, channels), probability = value / 255.
Finished rows are written with one ``pwrite`` (full-width rows are contiguous in the file); reads
map only the part they need and unmap it at once, so the process's resident memory holds one
strip or block at a time, never the whole map. Thresholds compare the stored bytes directly
(:func:`byte_level`), never floats made from them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def quantise_into(probabilities: np.ndarray, out: np.ndarray) -> None:
    """``round(p * 255)`` of probabilities (channels, rows, cols) in [0, 1] into ``out`` (rows,
    cols, channels) uint8; ``probabilities`` is overwritten."""
    probabilities *= 255.0
    probabilities += 0.5
    np.clip(probabilities, 0.0, 255.0, out=probabilities)
    out[...] = np.moveaxis(probabilities, 0, -1)  # truncation: the +0.5 above rounds


def byte_level(threshold: float) -> float:
    """The stored byte above which a probability is above ``threshold``: p > t <=> v > 255 t."""
    return threshold * 255.0


class ProbabilityStore:
    """A (height, width, channels) uint8 map of probabilities in a file."""

    def __init__(self, path: str | Path, height: int, width: int, channels: int = 2) -> None:
        self.path = Path(path)
        self.shape = (height, width, channels)
        with open(self.path, "wb") as fh:  # sparse file of zeros: unwritten pixels read as 0
            fh.truncate(height * width * channels)

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.path, dtype=np.uint8, mode=mode, shape=self.shape)

    def write_rows(self, row0: int, values: np.ndarray) -> None:
        """Store full-width rows ``values`` (rows, width, channels) uint8 starting at ``row0``."""
        _, width, channels = self.shape
        if values.shape[1:] != (width, channels) or values.dtype != np.uint8:
            raise ValueError(f"rows must be (n, {width}, {channels}) uint8, got {values.shape}")
        data = np.ascontiguousarray(values)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            view, offset = memoryview(data).cast("B"), row0 * width * channels
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        finally:
            os.close(fd)

    def write_block(self, row0: int, col0: int, probabilities: np.ndarray) -> None:
        """Store probabilities (channels, rows, cols) in [0, 1] with the corner at (row0, col0)."""
        values = np.empty((*probabilities.shape[1:], probabilities.shape[0]), np.uint8)
        quantise_into(np.array(probabilities, np.float32), values)
        rows, cols = values.shape[:2]
        if col0 == 0 and cols == self.shape[1]:
            self.write_rows(row0, values)
            return
        mm = self._map("r+")
        mm[row0 : row0 + rows, col0 : col0 + cols] = values
        mm.flush()
        del mm

    def read_bytes(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """The stored bytes (channels, rows, cols) uint8: probability = value / 255."""
        mm = self._map("r")
        block = np.array(mm[row0:row1, col0:col1])
        del mm
        return np.ascontiguousarray(np.moveaxis(block, -1, 0))

    def read(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """Probabilities (channels, rows, cols) as float32."""
        return self.read_bytes(row0, row1, col0, col1).astype(np.float32) / 255.0
