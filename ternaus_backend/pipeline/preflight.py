"""What an extraction will cost, worked out before it starts: pixels, km², temporary disk, time.

The stitched probability map (:class:`~ternaus_backend.pipeline.store.ProbabilityStore`) is a
file of ``height x width x channels`` bytes on the processing grid, in a temporary folder (the
job's folder for the HTTP API, the system temporary folder for the CLI). An extraction whose map
cannot fit in the free space there is refused before any work, instead of failing with a full
disk hours later. :func:`~ternaus_backend.pipeline.extract.extract` runs this check itself, so
the CLI, the HTTP API (which also runs it when a job is submitted) and QGIS share it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ternaus_backend.errors import InputError
from ternaus_backend.pipeline.raster import GridInfo

#: Rough extraction speed in processing-grid pixels per second (network, stitching, polygons),
#: as benchmarks/bench_extract.py measured it for the default light encoder: 0.6-0.9 Mpx/s on a
#: 2-core CPU; a GPU is taken as ~20x faster. Heavier encoders are slower: an ETA, not a promise.
PIXELS_PER_S = {"cpu": 7e5, "cuda": 1.4e7}
#: Free space kept beyond the estimate (the GeoPackage, GDAL's files, the rest of the system).
HEADROOM_BYTES = 64 * 2**20
HEADROOM_FRACTION = 0.05

FreeSpace = Callable[[Path], int]


def disk_free(folder: Path) -> int:
    """Free bytes on the disk holding ``folder`` (``shutil.disk_usage``)."""
    return shutil.disk_usage(folder).free


@dataclass(frozen=True)
class ExtractEstimate:
    """What an extraction will take: ``pixels`` and ``km2`` of the processing grid,
    ``temp_bytes`` of temporary disk (the probability map) and a rough ``eta_s``; ``temp_dir``
    and ``free_bytes``: where the temporary goes and how much space is free there."""

    pixels: int
    km2: float
    temp_bytes: int
    eta_s: float
    temp_dir: str
    free_bytes: int
    #: What the user should know before it runs (e.g. a raster upsampled far beyond its detail).
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, int | float | str | list[str]]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


def temp_folder(work_dir: str | Path | None) -> Path:
    """Where the extraction's temporary folder is made: ``work_dir`` or the system temp folder.
    A ``work_dir`` not made yet (a job's folder) counts by its nearest existing parent."""
    folder = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def estimate_extract(
    grid: GridInfo,
    channels: int,
    *,
    tta: bool = False,
    device_kind: str = "cpu",
    work_dir: str | Path | None = None,
    free_space: FreeSpace = disk_free,
) -> ExtractEstimate:
    """The estimate for an extraction on ``grid`` with ``channels`` output maps."""
    pixels = grid.width * grid.height
    folder = temp_folder(work_dir)
    speed = PIXELS_PER_S.get(device_kind, PIXELS_PER_S["cpu"])
    return ExtractEstimate(
        pixels=pixels,
        km2=round(grid.area_km2, 6),
        temp_bytes=pixels * channels,
        eta_s=round(pixels * (4 if tta else 1) / speed, 3),
        temp_dir=str(folder),
        free_bytes=int(free_space(folder)),
    )


def check_temp_space(estimate: ExtractEstimate) -> ExtractEstimate:
    """Refuses (InputError) an extraction whose temporary cannot fit in the free space."""
    needed = int(estimate.temp_bytes * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES
    if needed > estimate.free_bytes:
        raise InputError(
            f"This extraction needs about {_size(needed)} of temporary space in "
            f"{estimate.temp_dir} ({estimate.pixels:,} px, {estimate.km2:.3g} km²), but only "
            f"{_size(estimate.free_bytes)} is free there; choose a smaller extent (--bbox), "
            "free some space, or move the temporary folder to a larger disk (TMPDIR for the "
            "CLI, TERNAUS_WORK_DIR for the backend).",
            details=str(estimate.to_dict()),
        )
    return estimate


def _size(count: int) -> str:
    """Bytes in words: 12.3 GB, 450 MB, 0 B."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"
