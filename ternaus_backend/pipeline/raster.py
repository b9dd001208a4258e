"""Reading the input rasters: an RGB raster, optionally with a multispectral raster on the RGB grid.

The RGB raster defines the processing grid. A multispectral raster of another resolution, extent
or CRS is warped onto that grid (rasterio WarpedVRT, bilinear) and the grid is cropped to the
overlap of the two rasters and of the optional bounding box. Everything downstream (extraction
and training) reads pixels through ``RasterInputs.read`` so both see exactly the same values.

Any ground resolution in, the model's resolution inside: given ``resolution_m`` (the model's), a
raster whose pixels differ from it by more than :data:`RESAMPLE_TOLERANCE` is read resampled, on
the fly and window by window, through a WarpedVRT whose grid is the RGB raster's grid with pixel
sides scaled to ``resolution_m`` metres on the ground (square pixels; bilinear, or average when
shrinking by more than 2x). The grid keeps the raster's CRS, origin and orientation, so everything
located on it (polygons) lands in the raster's coordinates. The warp's alpha band carries the
raster's nodata, alpha or mask band, so invalid pixels stay invalid. The multispectral raster is
warped directly onto the resampled grid. Normalisation statistics (``read_overview``) always come
from the raster at its own resolution (a decimated read), which resampling hardly changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ternaus_backend.errors import InputError
from ternaus_backend.models.metadata import MS_BANDS, RGB_BANDS
from ternaus_backend.network_files import check_local_file, network_files_allowed
from ternaus_backend.pipeline.geodesy import GroundMeasure

log = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]

# GDAL's block cache defaults to 5 % of the machine's memory and fills up as a large raster is
# read; a fixed cap keeps extraction memory independent of the raster's size.
GDAL_CACHE_BYTES = 128 * 2**20
#: Pixels whose ground size differs from the wanted resolution by at most this fraction (on both
#: axes) are read as they are; larger differences are resampled.
RESAMPLE_TOLERANCE = 0.05
#: A file name ending no file has: with it as GDAL's CPL_VSIL_CURL_ALLOWED_EXTENSIONS, /vsicurl/
#: and the other network file systems open nothing.
NO_NETWORK_EXTENSION = ".ternaus-network-files-not-allowed"


def raster_env() -> rasterio.Env:
    """The GDAL settings every read of the pipeline runs under.

    Unless network files are allowed, GDAL's network file systems accept no file at all (a
    second guard behind :func:`~ternaus_backend.network_files.check_local_file`).
    """
    options: dict[str, object] = {"GDAL_CACHEMAX": GDAL_CACHE_BYTES}
    if not network_files_allowed():
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = NO_NETWORK_EXTENSION
    return rasterio.Env(**options)


def _open(path: str | Path, role: str) -> rasterio.DatasetReader:
    check_local_file(path, f"{role} raster")
    path = Path(path)
    if not path.exists():
        raise InputError(f"The {role} raster {path} does not exist; check the path.")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(
            f"The {role} raster {path} cannot be read as a raster; give a GeoTIFF or another "
            "GDAL-readable image.",
            details=str(exc),
        ) from exc


#: How the refusal of a raster without a CRS says to assume one (CLI flag and API field).
ASSUME_CRS_HINT = 'pass --assume-crs EPSG:xxxx (HTTP API: "assume_crs") with the CRS it is in'


def parse_crs(value: str | CRS, what: str) -> CRS:
    """``value`` as a CRS; InputError naming ``what`` (e.g. "--assume-crs") when it is unknown."""
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise InputError(
            f"The {what} {value!r} is not a known CRS; give an EPSG code such as EPSG:32636.",
            details=str(exc),
        ) from exc


def georeferenced_crs(ds: rasterio.DatasetReader, role: str, assume_crs: str | CRS | None) -> CRS:
    """The CRS of a raster that can be placed on the map: its own, else ``assume_crs``.

    Refuses (InputError) a raster without a geotransform (pixel coordinates only, or ground
    control points only), and one with a geotransform but no CRS unless ``assume_crs`` is given.
    """
    if ds.transform.is_identity:
        how = (
            "it has ground control points only: warp it onto a grid (gdalwarp, or QGIS "
            "Georeferencer)"
            if ds.gcps[0]
            else "georeference it (QGIS Georeferencer, or gdal_translate -a_ullr XMIN YMAX XMAX "
            "YMIN -a_srs EPSG:xxxx)"
        )
        raise InputError(
            f"The {role} raster {ds.name} has no georeferencing (no geotransform), so buildings "
            f"found in it could not be placed on the map; {how}, then try again."
        )
    if ds.crs is not None:
        return ds.crs
    if assume_crs is None:
        raise InputError(
            f"The {role} raster {ds.name} has no CRS; georeference it (QGIS: Layer > Set CRS, "
            f"then export; or gdal_edit.py -a_srs EPSG:xxxx), or {ASSUME_CRS_HINT}."
        )
    return parse_crs(assume_crs, "assumed CRS")


def check_bbox(bbox: Bounds) -> Bounds:
    """``bbox`` as four floats; InputError unless they are finite with xmin < xmax, ymin < ymax."""
    values = tuple(float(v) for v in bbox)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(
            f"The bounding box {tuple(bbox)} must be four finite numbers XMIN,YMIN,XMAX,YMAX "
            "(no NaN or infinity)."
        )
    xmin, ymin, xmax, ymax = values
    if xmax <= xmin or ymax <= ymin:
        raise InputError(
            f"The bounding box {tuple(bbox)} is empty or inverted; give XMIN,YMIN,XMAX,YMAX with "
            "XMIN < XMAX and YMIN < YMAX."
        )
    return values  # type: ignore[return-value]


def _rgb_band_indexes(ds: rasterio.DatasetReader) -> list[int]:
    """Band indexes (1-based) of red, green, blue: by colour interpretation, else the first 3."""
    if ds.count < 3:
        raise InputError(
            f"The RGB raster {ds.name} has {ds.count} band(s); it needs at least 3 "
            "(red, green, blue)."
        )
    interp = list(ds.colorinterp)
    wanted = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in interp for c in wanted):
        return [interp.index(c) + 1 for c in wanted]
    return [1, 2, 3]


def _sorted(bounds) -> Bounds:
    """(xmin, ymin, xmax, ymax) whatever the raster's orientation."""
    x0, y0, x1, y1 = bounds
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _intersect(a: Bounds, b: Bounds) -> Bounds | None:
    a, b = _sorted(a), _sorted(b)
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    if right <= left or top <= bottom:
        return None
    return left, bottom, right, top


def _read_padded(
    ds, indexes: list[int], window: Window, out_shape: tuple[int, int] | None, masks: bool = False
) -> np.ndarray:
    """Reads ``window`` (float32 values or uint8 masks); parts outside the dataset are 0."""
    shape = out_shape or (int(window.height), int(window.width))
    if masks and all(MaskFlags.all_valid in ds.mask_flag_enums[i - 1] for i in indexes):
        return _inside_mask(ds, window, shape)  # no nodata, alpha or mask band: skip reading
    read = _reporting_damage(ds, ds.read_masks if masks else ds.read)
    kwargs = {} if masks else {"out_dtype": "float32"}
    col0, row0 = int(window.col_off), int(window.row_off)
    col1, row1 = col0 + int(window.width), row0 + int(window.height)
    inside = Window.from_slices(
        (max(row0, 0), min(row1, ds.height)), (max(col0, 0), min(col1, ds.width))
    )
    if (inside.col_off, inside.row_off, inside.width, inside.height) == (
        col0,
        row0,
        col1 - col0,
        row1 - row0,
    ):
        return read(
            indexes,
            window=window,
            out_shape=(len(indexes), *shape),
            resampling=Resampling.nearest,
            **kwargs,
        )
    if out_shape is not None:
        raise ValueError("decimated reads must lie inside the raster")
    out = np.zeros((len(indexes), *shape), np.uint8 if masks else np.float32)
    if inside.width > 0 and inside.height > 0:
        r, c = int(inside.row_off) - row0, int(inside.col_off) - col0
        out[:, r : r + int(inside.height), c : c + int(inside.width)] = read(
            indexes, window=inside, **kwargs
        )
    return out


def _mask_alpha_index(ds, indexes: list[int]) -> int | None:
    """The 1-based index of the alpha band that is the mask of all ``indexes``, if there is one
    (a warp's added alpha, an RGBA raster): reading it with the bands gives their mask."""
    if ColorInterp.alpha not in ds.colorinterp:
        return None
    if not all(MaskFlags.alpha in ds.mask_flag_enums[i - 1] for i in indexes):
        return None
    return ds.colorinterp.index(ColorInterp.alpha) + 1


def _read_bands(
    ds,
    indexes: list[int],
    window: Window,
    out_shape: tuple[int, int] | None,
    alphas: dict[str, np.ndarray] | None,
    role: str,
) -> np.ndarray:
    """``_read_padded`` of ``indexes``; with ``alphas``, their alpha mask band is read in the
    same call and stored as ``alphas[role]``."""
    alpha = _mask_alpha_index(ds, indexes) if alphas is not None else None
    if alpha is None:
        return _read_padded(ds, indexes, window, out_shape)
    data = _read_padded(ds, [*indexes, alpha], window, out_shape)
    alphas[role] = data[-1]
    return data[:-1]


def _reporting_damage(ds, read):
    """``read`` that turns GDAL's read errors (a damaged tile or strip) into an InputError."""

    def checked(*args, **kwargs):
        try:
            return read(*args, **kwargs)
        except RasterioIOError as exc:
            name = getattr(ds, "src_dataset", ds).name
            raise InputError(
                f"The raster {name} cannot be read: part of it is damaged or truncated "
                "(check it with gdalinfo -checksum); re-export or re-download it.",
                details=str(exc),
            ) from exc

    return checked


def _inside_mask(ds, window: Window, shape: tuple[int, int]) -> np.ndarray:
    """255 where the (full-resolution) window lies inside the dataset, 0 outside."""
    out = np.zeros((1, *shape), np.uint8)
    if shape != (int(window.height), int(window.width)):
        out[:] = 255  # decimated reads lie inside the raster
        return out
    r0, c0 = max(0, -int(window.row_off)), max(0, -int(window.col_off))
    r1 = min(shape[0], ds.height - int(window.row_off))
    c1 = min(shape[1], ds.width - int(window.col_off))
    out[:, r0:r1, c0:c1] = 255
    return out


def input_band_names(rgb: Path, ms: Path | None) -> list[str]:
    """Band names in the order ``RasterInputs.read`` returns them: red, green, blue, then MS.

    Multispectral names come from the raster's band descriptions; an undescribed 8-band raster
    is taken as WorldView-2/3 (SpaceNet MUL) order, anything else as ``ms1``..``msN``.
    """
    names = list(RGB_BANDS)
    if ms is None:
        return names
    with rasterio.open(ms) as ds:
        descriptions = [d.strip().lower() if d else "" for d in ds.descriptions]
        count = ds.count
    if all(descriptions) and len(set(descriptions)) == count:
        return names + descriptions
    if count == len(MS_BANDS):
        return names + list(MS_BANDS)
    return names + [f"ms{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class GridInfo:
    """The processing grid: size, georeferencing and the ground size of one pixel."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None

    @property
    def bounds(self) -> Bounds:
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return min(left, right), min(top, bottom), max(left, right), max(top, bottom)

    @property
    def pixel_size_xy_m(self) -> tuple[float, float]:
        """Ground width and height of a pixel at the grid's centre, in metres (any CRS)."""
        return GroundMeasure(self.crs).pixel_size_m(self.transform, self.width / 2, self.height / 2)

    @property
    def pixel_size_m(self) -> float:
        """Mean ground size of one pixel in metres."""
        return float(np.mean(self.pixel_size_xy_m))

    @property
    def area_km2(self) -> float:
        width_m, height_m = self.pixel_size_xy_m
        return self.width * self.height * width_m * height_m / 1e6


def resampling_for(scale: float) -> Resampling:
    """The resampling for pixel sides multiplied by ``scale``: bilinear, or the average of the
    source pixels when shrinking by more than 2x (bilinear would alias there)."""
    return Resampling.average if scale > 2.0 else Resampling.bilinear


def grid_scale(
    grid: GridInfo, resolution_m: float | None, tolerance: float = RESAMPLE_TOLERANCE
) -> tuple[float, float] | None:
    """Factors (x, y) by which ``grid``'s pixel sides grow to be ``resolution_m`` metres on the
    ground, or ``None`` when no resampling is needed: no resolution given (``None`` or 0), a
    raster without georeferencing, or pixel sizes within ``tolerance`` (relative) of it."""
    if not resolution_m or resolution_m <= 0:
        return None
    if grid.crs is None and grid.transform.is_identity:
        log.warning(
            "The raster has no georeferencing, so its ground resolution is unknown; it is read "
            "at its own pixel size (the model expects %.2f m). Georeference it to have it "
            "resampled.",
            resolution_m,
        )
        return None
    px, py = grid.pixel_size_xy_m
    if not (math.isfinite(px) and math.isfinite(py) and px > 0 and py > 0):
        return None
    if max(abs(px - resolution_m), abs(py - resolution_m)) <= tolerance * resolution_m:
        return None
    return resolution_m / px, resolution_m / py


class RasterInputs:
    """An open RGB raster (+ optional multispectral raster warped onto its grid), cropped.

    Windows passed to ``read`` and ``valid`` are relative to the cropped grid (``self.grid``),
    which is the raster's own grid, or the resampled one when ``open`` was given a resolution.
    Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        rgb: rasterio.DatasetReader,
        ms: rasterio.DatasetReader | None,
        ms_vrt: WarpedVRT | None,
        offset: Window,
        stats_offset: Window | None = None,
        *,
        rgb_grid: rasterio.DatasetReader | WarpedVRT | None = None,
        ms_grid: WarpedVRT | None = None,
        scale: tuple[float, float] | None = None,
        crs: CRS | None = None,
    ) -> None:
        self._rgb = rgb  # the RGB raster itself (statistics)
        self._ms = ms
        self._ms_vrt = ms_vrt  # MS on the RGB raster's own grid (statistics)
        self._rgb_grid = rgb_grid if rgb_grid is not None else rgb  # RGB on the processing grid
        self._ms_grid = ms_grid if ms_grid is not None else ms_vrt  # MS on the processing grid
        self._offset = offset  # the cropped grid, in pixels of the processing grid
        self._stats_offset = stats_offset or offset  # in pixels of the RGB raster
        self._rgb_bands = _rgb_band_indexes(rgb)
        self.scale = scale
        self.grid = GridInfo(
            width=int(offset.width),
            height=int(offset.height),
            transform=rasterio.windows.transform(offset, self._rgb_grid.transform),
            crs=crs or rgb.crs,
        )
        self.rgb_path = rgb.name
        self.ms_path = ms.name if ms is not None else None
        self.ms_band_count = ms.count if ms is not None else 0
        self.rgb_dtype = np.dtype(rgb.dtypes[0])

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        rgb_path: str | Path,
        ms_path: str | Path | None = None,
        bbox: Bounds | None = None,
        bbox_crs: str | CRS | None = None,
        resolution_m: float | None = None,
        assume_crs: str | CRS | None = None,
    ) -> RasterInputs:
        """Open the rasters and compute the processing grid (RGB ∩ MS ∩ bbox).

        ``bbox`` is (xmin, ymin, xmax, ymax) in ``bbox_crs`` (default: the RGB raster's CRS); a
        box larger than the raster (even the whole world) is clipped to it.
        Rasters must be georeferenced (:func:`georeferenced_crs`); ``assume_crs`` is the CRS of
        those with a geotransform but no CRS.
        ``resolution_m``: the ground resolution to read at (the model's); ``None`` reads the
        raster at its own resolution. The resampled grid depends on the raster only (its pixel
        size at its centre), never on the bbox, so crops of one raster share one grid.
        """
        rgb = _open(rgb_path, "RGB")
        ms = vrt = rgb_grid = ms_grid = None
        try:
            crs = georeferenced_crs(rgb, "RGB", assume_crs)
            _rgb_band_indexes(rgb)
            native = GridInfo(rgb.width, rgb.height, rgb.transform, crs)
            scale = grid_scale(native, resolution_m)
            region: Bounds | None = _sorted(rgb.bounds)
            full_region = region
            if bbox is not None:
                region = cls._bbox_in_crs(bbox, bbox_crs, crs, region)
                if region is None:
                    raise InputError(
                        f"The bounding box {tuple(bbox)} does not overlap the RGB raster "
                        f"(bounds {tuple(round(v, 6) for v in rgb.bounds)} in {crs}); "
                        "give a box inside the raster, in the raster's CRS."
                    )
            if ms_path is not None:
                ms = _open(ms_path, "multispectral")
                ms_crs = georeferenced_crs(ms, "multispectral", assume_crs)
                if ms_crs != crs:
                    ms_bounds = transform_bounds(ms_crs, crs, *_sorted(ms.bounds), densify_pts=21)
                else:
                    ms_bounds = _sorted(ms.bounds)
                overlap = _intersect(region, ms_bounds)
                if overlap is None:
                    raise InputError(
                        f"The multispectral raster {ms_path} does not overlap the RGB raster "
                        f"{rgb_path} (or the bounding box); give rasters of the same scene."
                    )
                region = overlap
                full_region = _intersect(full_region, ms_bounds)
            if scale is not None:
                sx, sy = scale
                rgb_grid = WarpedVRT(
                    rgb,
                    src_crs=crs,
                    crs=crs,
                    transform=rgb.transform * Affine.scale(sx, sy),
                    width=max(1, math.ceil(rgb.width / sx - 1e-6)),
                    height=max(1, math.ceil(rgb.height / sy - 1e-6)),
                    resampling=resampling_for(max(sx, sy)),
                    # nodata, alpha and mask bands become one alpha band on the new grid
                    add_alpha=not _has_alpha(rgb),
                )
            grid_ds = rgb_grid if rgb_grid is not None else rgb
            window = cls._window_for(grid_ds, region)
            stats_window = cls._window_for(rgb, full_region)
            if ms is not None:
                vrt = cls._warp_ms(ms, ms_crs, rgb, crs)
                if rgb_grid is not None:
                    ms_grid = cls._warp_ms(ms, ms_crs, rgb_grid, crs)
            return cls(
                rgb,
                ms,
                vrt,
                window,
                stats_window,
                rgb_grid=rgb_grid,
                ms_grid=ms_grid,
                scale=scale,
                crs=crs,
            )
        except Exception:
            for ds in (ms_grid, vrt, ms, rgb_grid, rgb):
                if ds is not None:
                    ds.close()
            raise

    @staticmethod
    def _warp_ms(
        ms: rasterio.DatasetReader,
        ms_crs: CRS,
        onto: rasterio.DatasetReader | WarpedVRT,
        crs: CRS,
    ) -> WarpedVRT:
        """The multispectral raster (in ``ms_crs``) warped (bilinear) onto the grid of ``onto``
        (in ``crs``)."""
        return WarpedVRT(
            ms,
            src_crs=ms_crs,
            crs=crs,
            transform=onto.transform,
            width=onto.width,
            height=onto.height,
            resampling=Resampling.bilinear,
            add_alpha=True,  # pixels the MS raster does not cover are masked
        )

    @staticmethod
    def _bbox_in_crs(
        bbox: Bounds, bbox_crs: str | CRS | None, crs: CRS, region: Bounds
    ) -> Bounds | None:
        """``bbox`` (in ``bbox_crs``) ∩ ``region`` (in ``crs``), in ``crs``; None if disjoint.

        A box in another CRS is first clipped to the region's footprint in that CRS, so a box far
        larger than the raster (the whole world in EPSG:4326) never has to be reprojected as a
        whole (most projections cannot hold it).
        """
        bbox = check_bbox(bbox)
        if bbox_crs is None:
            return _intersect(region, bbox)
        given = parse_crs(bbox_crs, "bounding box CRS")
        if given == crs:
            return _intersect(region, bbox)
        try:
            footprint = transform_bounds(crs, given, *region, densify_pts=21)
            clipped = _intersect(footprint, bbox) if _finite_bounds(footprint) else bbox
            if clipped is None:
                return None
            inside = transform_bounds(given, crs, *clipped, densify_pts=21)
        except Exception as exc:  # PROJ errors for boxes the projections cannot hold
            raise InputError(
                f"The bounding box {tuple(bbox)} in {bbox_crs} cannot be converted to the raster's "
                f"CRS ({crs}); give it in the raster's CRS, or a smaller box.",
                details=f"{type(exc).__name__}: {exc}",
            ) from exc
        if not _finite_bounds(inside):
            raise InputError(
                f"The bounding box {tuple(bbox)} in {bbox_crs} lies outside what the raster's CRS "
                f"({crs}) can show; give it in the raster's CRS, or a box around the raster."
            )
        return _intersect(region, inside)

    @staticmethod
    def _window_for(ds: rasterio.DatasetReader | WarpedVRT, region: Bounds) -> Window:
        """The whole pixels of ``ds`` covering ``region`` (any transform orientation)."""
        left, bottom, right, top = region
        inverse = ~ds.transform
        corners = [
            inverse * xy for xy in ((left, bottom), (left, top), (right, bottom), (right, top))
        ]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        col0 = max(0, int(math.floor(min(cols) + 1e-6)))
        row0 = max(0, int(math.floor(min(rows) + 1e-6)))
        col1 = min(ds.width, int(math.ceil(max(cols) - 1e-6)))
        row1 = min(ds.height, int(math.ceil(max(rows) - 1e-6)))
        if col1 - col0 < 1 or row1 - row0 < 1:
            raise InputError(
                "The requested extent covers no whole pixel of the RGB raster; give a larger "
                "extent."
            )
        return Window(col0, row0, col1 - col0, row1 - row0)

    @property
    def source_grid(self) -> tuple[Affine, int, int]:
        """The transform of the whole raster's processing grid, and where this crop starts in it
        (column, row): shapes traced in those pixels do not depend on the crop."""
        return self._rgb_grid.transform, int(self._offset.col_off), int(self._offset.row_off)

    # -- reading ----------------------------------------------------------------------------
    @property
    def band_count(self) -> int:
        """Channels ``read`` returns: 3 RGB bands, then the multispectral bands."""
        return 3 + self.ms_band_count

    @property
    def dtypes(self) -> tuple[str, str | None]:
        """Data types of the RGB raster and of the multispectral one (None without it)."""
        return self._rgb.dtypes[0], self._ms.dtypes[0] if self._ms is not None else None

    @property
    def resampled(self) -> bool:
        """Whether the grid is a resampled one (not the raster's own pixels)."""
        return self.scale is not None

    def _abs(self, window: Window) -> Window:
        return Window(
            window.col_off + self._offset.col_off,
            window.row_off + self._offset.row_off,
            window.width,
            window.height,
        )

    def _read_values(
        self,
        rgb_ds,
        ms_ds,
        window: Window,
        out_shape: tuple[int, int] | None,
        alphas: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Values (C, h, w) float32; with ``alphas`` (a dict to fill), alpha bands that are the
        datasets' masks come from the same read (one warp per window, not two)."""
        rgb = _read_bands(rgb_ds, self._rgb_bands, window, out_shape, alphas, "rgb")
        if ms_ds is None:
            return rgb
        bands = list(range(1, self.ms_band_count + 1))
        ms = _read_bands(ms_ds, bands, window, out_shape, alphas, "ms")
        return np.concatenate([rgb, ms], axis=0)

    def _read_valid(
        self,
        rgb_ds,
        ms_ds,
        window: Window,
        out_shape: tuple[int, int] | None,
        values: np.ndarray | None = None,
        alphas: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Masks (nodata, alpha, mask band, MS coverage) and finite values: NaN and +/-inf pixels
        of float rasters count as nodata. ``values``: the raw values of the same window, if read;
        ``alphas``: alpha bands read with them."""
        alphas = alphas or {}
        if "rgb" in alphas:
            valid = alphas["rgb"] > 0
        else:
            masks = _read_padded(rgb_ds, self._rgb_bands, window, out_shape, masks=True)
            valid = np.all(masks > 0, axis=0)
        if ms_ds is not None:  # the warp's alpha band: 0 where the MS raster has no data
            alpha = alphas.get("ms")
            if alpha is None:
                alpha = _read_padded(ms_ds, [self.ms_band_count + 1], window, out_shape)[0]
            valid &= alpha > 0
        if values is None and self._may_hold_non_finite:
            values = self._read_values(rgb_ds, ms_ds, window, out_shape)
        if values is not None:
            valid &= np.isfinite(values).all(axis=0)
        return valid

    @property
    def _may_hold_non_finite(self) -> bool:
        """Whether any band read is floating point (integers are always finite)."""
        datasets = [(self._rgb, self._rgb_bands)]
        if self._ms is not None:
            datasets.append((self._ms, list(range(1, self.ms_band_count + 1))))
        return any(np.dtype(ds.dtypes[i - 1]).kind in "fc" for ds, bands in datasets for i in bands)

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Raw values as float32 (C, h, w): RGB bands then multispectral bands.

        Pixels outside the raster and non-finite values (NaN, +/-inf) read as 0 (and are invalid,
        see ``valid``). ``out_shape`` reads a decimated version of the window (for statistics).
        """
        values = self._read_values(self._rgb_grid, self._ms_grid, self._abs(window), out_shape)
        return _finite(values)

    def valid(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """True where every RGB band (and the multispectral data, if any) holds data: not nodata,
        not masked, not NaN or infinite."""
        return self.read_masked(window, out_shape, values=False)[1]

    def read_masked(
        self, window: Window, out_shape: tuple[int, int] | None = None, values: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(read(window), valid(window))`` from one read of the pixels (``values=False``:
        the first item is None and values are read only when they may be non-finite)."""
        window_abs = self._abs(window)
        raw, alphas = None, {}
        if values or self._may_hold_non_finite:
            raw = self._read_values(self._rgb_grid, self._ms_grid, window_abs, out_shape, alphas)
        valid = self._read_valid(self._rgb_grid, self._ms_grid, window_abs, out_shape, raw, alphas)
        if out_shape is None:  # pixels outside the grid are never valid
            inside = np.zeros_like(valid)
            r0, c0 = max(0, -int(window.row_off)), max(0, -int(window.col_off))
            r1 = min(valid.shape[0], self.grid.height - int(window.row_off))
            c1 = min(valid.shape[1], self.grid.width - int(window.col_off))
            inside[r0:r1, c0:c1] = True
            valid &= inside
        return (_finite(raw) if values else None), valid  # type: ignore[return-value]

    def read_overview(self, max_pixels: int = 1_048_576) -> tuple[np.ndarray, np.ndarray]:
        """The whole raster (RGB ∩ MS, ignoring the bbox), decimated to at most ``max_pixels``
        pixels: (values, valid). Normalisation statistics come from here, so results do not
        depend on the extent the user picked (nor on resampling: this reads the raster at its
        own resolution). Non-finite pixels are invalid and read as 0."""
        stats = self._stats_offset
        height, width = int(stats.height), int(stats.width)
        factor = max(1.0, math.sqrt(height * width / max_pixels))
        shape = (max(1, int(height / factor)), max(1, int(width / factor)))
        values = self._read_values(self._rgb, self._ms_vrt, stats, shape)
        valid = self._read_valid(self._rgb, self._ms_vrt, stats, shape, values)
        return _finite(values), valid

    def close(self) -> None:
        for ds in (self._ms_grid, self._ms_vrt, self._ms, self._rgb_grid, self._rgb):
            if ds is not None and not ds.closed:
                ds.close()

    def __enter__(self) -> RasterInputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _finite_bounds(bounds: Bounds) -> bool:
    """Whether all four numbers are finite (reprojection yields inf outside a projection)."""
    return all(math.isfinite(v) for v in bounds)


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and +/-inf replaced by 0 (in place; those pixels are invalid)."""
    if not np.isfinite(values).all():
        np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return values


def _has_alpha(ds: rasterio.DatasetReader) -> bool:
    """Whether the dataset has an alpha band (a warp carries it over, adding one would fail)."""
    return ColorInterp.alpha in ds.colorinterp
