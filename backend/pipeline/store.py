"""Stitched probability maps kept on disk, so memory does not grow with the raster.

The maps are one raw uint8 file of shape (height, width, channels), probability = value / 255.
Every access maps only the rows or the block it needs and unmaps it at once, so the process's
resident memory holds one strip or block at a time, never the whole map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ProbabilityStore:
    """A (height, width, channels) uint8 map of probabilities in a file."""

    def __init__(self, path: str | Path, height: int, width: int, channels: int = 2) -> None:
        self.path = Path(path)
        self.shape = (height, width, channels)
        with open(self.path, "wb") as fh:  # sparse file of zeros: unwritten pixels read as 0
            fh.truncate(height * width * channels)

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.path, dtype=np.uint8, mode=mode, shape=self.shape)

    def write_block(self, row0: int, col0: int, probabilities: np.ndarray) -> None:
        """Store probabilities (channels, rows, cols) in [0, 1] with their corner at (row0, col0)."""
        values = np.clip(probabilities * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rows, cols = values.shape[1:]
        mm = self._map("r+")
        mm[row0 : row0 + rows, col0 : col0 + cols] = np.moveaxis(values, 0, -1)
        mm.flush()
        del mm

    def read(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """Probabilities (channels, rows, cols) as float32."""
        mm = self._map("r")
        block = np.array(mm[row0:row1, col0:col1])
        del mm
        return np.moveaxis(block, -1, 0).astype(np.float32) / 255.0
