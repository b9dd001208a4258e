"""Rasters given as many files: a list or glob of GeoTIFF tiles becomes one GDAL VRT mosaic.

The VRT only references the tiles (no copy of the pixels); a single file (GeoTIFF, cloud-optimised
GeoTIFF, VRT) is used as it is.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Sequence
from pathlib import Path

from ternaus_backend.errors import InputError

GLOB_CHARACTERS = set("*?[")


def expand_sources(specs: Sequence[str | Path]) -> list[Path]:
    """The files named by ``specs``: paths, or glob patterns (``tiles/*.tif``), in sorted order."""
    files: list[Path] = []
    for spec in specs:
        text = str(spec)
        if GLOB_CHARACTERS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"No file matches {text!r}: check the pattern and the folder.")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(text))
    missing = [str(f) for f in files if not f.is_file()]
    if missing and len(files) > 1:  # one file: the pipeline says what is wrong with it
        raise InputError(
            f"The raster tile(s) {', '.join(missing[:5])} do not exist: check the paths."
        )
    return files


def mosaic(specs: str | Path | Sequence[str | Path], folder: Path, role: str = "RGB") -> Path:
    """One raster path for ``specs``: the file itself, or a VRT of all tiles written in
    ``folder`` (named after the tiles, so the same tiles give the same VRT)."""
    if isinstance(specs, (str, Path)):
        specs = [specs]
    files = expand_sources(specs)
    if len(files) == 1:
        return files[0]
    try:
        from osgeo import gdal
    except ImportError as exc:
        raise InputError(
            f"Several {role} tiles need GDAL's Python bindings to make a mosaic (Debian: "
            "python3-gdal); or build one yourself: gdalbuildvrt mosaic.vrt tiles/*.tif, and "
            "pass mosaic.vrt.",
        ) from exc
    names = "\n".join(str(f.resolve()) for f in files)
    digest = hashlib.sha256(names.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{role.lower()}-mosaic-{digest}.vrt"
    gdal.UseExceptions()
    try:
        vrt = gdal.BuildVRT(str(out), [str(f.resolve()) for f in files])
    except RuntimeError as exc:
        raise InputError(f"The {role} tiles cannot form one mosaic: {exc}") from exc
    if vrt is None:
        raise InputError(
            f"The {role} tiles cannot form one mosaic (same CRS and band count are needed)."
        )
    vrt.FlushCache()
    vrt = None
    return out
