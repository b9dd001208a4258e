"""The extraction pipeline: rasters in, building polygons (GeoPackage) out.

One implementation behind the CLI, the HTTP API, the training loop's validation and QGIS:
read -> normalise -> windows -> network -> stitched maps on disk -> instances in blocks ->
polygons -> GeoPackage.

The processing grid has the model's ground resolution (``metadata.resolution_m``): a raster of
another pixel size is read resampled, window by window (:mod:`.raster`), and the polygons come back
in the raster's CRS and coordinates. ``ExtractOptions(native_resolution=True)`` reads the raster's
own pixels instead (with a warning when they are far from the model's).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import shapely
import torch
from affine import Affine

from ternaus_backend.device import pick_device
from ternaus_backend.errors import InputError, ModelError
from ternaus_backend.models.metadata import MS_BANDS, ModelMetadata
from ternaus_backend.outputs import check_output, os_error
from ternaus_backend.pipeline.engine import DevicePlan, plan_device
from ternaus_backend.pipeline.geodesy import GroundMeasure
from ternaus_backend.pipeline.inference import predict_probabilities
from ternaus_backend.pipeline.instances import BlockSpec, block_instances, block_specs
from ternaus_backend.pipeline.normalize import Normalizer
from ternaus_backend.pipeline.options import ExtractOptions
from ternaus_backend.pipeline.polygons import BuildingWriter, finish_polygons, label_polygons
from ternaus_backend.pipeline.preflight import (
    ExtractEstimate,
    FreeSpace,
    check_temp_space,
    disk_free,
    estimate_extract,
)
from ternaus_backend.pipeline.raster import Bounds, RasterInputs, input_band_names, raster_env
from ternaus_backend.pipeline.store import ProbabilityStore
from ternaus_backend.pipeline.windows import WindowGrid, balanced_grid, window_grid
from ternaus_backend.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from ternaus_backend.scratch import scratch_dir

log = logging.getLogger(__name__)

#: The embedded resources: inside the package when installed from a wheel, else the checkout's.
_PACKAGED_RESOURCES = Path(__file__).resolve().parents[1] / "resources"
RESOURCES = (
    _PACKAGED_RESOURCES
    if _PACKAGED_RESOURCES.is_dir()
    else Path(__file__).resolve().parents[2] / "resources"
)
DEFAULT_MODEL = RESOURCES / "models" / "default.safetensors"


@dataclass
class ExtractResult:
    """What an extraction produced."""

    path: Path
    count: int
    width_px: int
    height_px: int
    area_km2: float
    seconds: float
    clipped: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    #: Ground size of the processing grid's pixels and whether the raster was resampled to it.
    resolution_m: float = 0.0
    resampled: bool = False
    #: What the user should know about the run (e.g. a raster upsampled far beyond its detail).
    warnings: list[str] = field(default_factory=list)


def resolve_model(
    model: str | Path | torch.nn.Module | None, device: torch.device
) -> torch.nn.Module:
    """A loaded model: the given module, a model file, or the embedded default model."""
    if isinstance(model, torch.nn.Module):
        if not hasattr(model, "metadata"):
            raise ModelError("The model has no .metadata; load it with ternaus_backend.load_model.")
        return model.to(device).eval()
    from ternaus_backend.models.model_file import load_model

    path = Path(model) if model is not None else DEFAULT_MODEL
    if model is None and not path.exists():
        raise ModelError(
            f"The default model {path} is missing; reinstall the project or pass --model PATH."
        )
    return load_model(path, device=str(device))


def check_bands(inputs: RasterInputs, meta: ModelMetadata, has_ms: bool) -> None:
    """Refuses inputs whose bands do not fit the model (count, or a known MS band order), saying
    why."""
    in_channels = meta.in_channels
    if inputs.band_count == in_channels:
        given = input_band_names(inputs.rgb_path, inputs.ms_path)[3:]
        wanted = meta.band_names[3:]
        known = set(MS_BANDS)
        if set(given) <= known and set(wanted) <= known and given != wanted:
            raise InputError(
                f"The multispectral bands are in another order than the model expects: the raster "
                f"has {', '.join(given)}; the model needs {', '.join(wanted)}. Reorder the bands "
                "(e.g. gdal_translate with -b) or give the matching raster."
            )
        return
    if in_channels > 3 and not has_ms:
        raise InputError(
            f"This model needs {in_channels} bands (RGB + {in_channels - 3} multispectral); "
            "give the multispectral raster too (--ms PATH), or use an RGB (3-band) model."
        )
    raise InputError(
        f"This model needs {in_channels} bands but the inputs give {inputs.band_count} "
        f"(3 RGB + {inputs.ms_band_count} multispectral); "
        + (
            "leave out the multispectral raster."
            if in_channels == 3
            else f"give a multispectral raster with {in_channels - 3} bands."
        )
    )


def model_metadata(model: str | Path | torch.nn.Module | None) -> ModelMetadata:
    """A model's metadata without loading its network (our files: from the header)."""
    if isinstance(model, torch.nn.Module):
        return resolve_model(model, torch.device("cpu")).metadata
    from ternaus_backend.models.model_file import describe_model

    path = Path(model) if model is not None else DEFAULT_MODEL
    if model is None and not path.exists():
        raise ModelError(
            f"The default model {path} is missing; reinstall the project or pass --model PATH."
        )
    return ModelMetadata.model_validate(describe_model(path)["metadata"])


def processing_inputs(
    rgb: str | Path,
    ms: str | Path | None,
    meta: ModelMetadata,
    bbox: Bounds | None,
    bbox_crs: str | None,
    assume_crs: str | None,
    native_resolution: bool,
) -> RasterInputs:
    """The inputs on the processing grid: the model's resolution unless ``native_resolution``."""
    return RasterInputs.open(
        rgb,
        ms,
        bbox=bbox,
        bbox_crs=bbox_crs,
        resolution_m=None if native_resolution else meta.resolution_m,
        assume_crs=assume_crs,
    )


def preflight(
    rgb: str | Path,
    ms: str | Path | None = None,
    model: str | Path | torch.nn.Module | None = None,
    bbox: Bounds | None = None,
    bbox_crs: str | None = None,
    options: ExtractOptions | None = None,
    work_dir: str | Path | None = None,
    assume_crs: str | None = None,
    free_space: FreeSpace = disk_free,
) -> ExtractEstimate:
    """The estimate of ``extract`` with the same arguments, checked against the free disk space
    (InputError when the temporary cannot fit); reads the rasters' headers and the model's
    metadata only. ``extract`` runs the same check itself."""
    opts = options or ExtractOptions()
    meta = model_metadata(model)
    device_kind = pick_device(opts.device).type
    with raster_env():
        with processing_inputs(
            rgb, ms, meta, bbox, bbox_crs, assume_crs, opts.native_resolution
        ) as inputs:
            estimate = check_temp_space(
                estimate_extract(
                    inputs.grid,
                    meta.num_classes,
                    tta=opts.tta,
                    device_kind=device_kind,
                    work_dir=work_dir,
                    free_space=free_space,
                )
            )
            return with_upsampling_warning(estimate, inputs, meta)


#: Upsampling a raster by more than this factor (per side) to the model's resolution is warned
#: about: the work grows with its square, and the model sees no detail the raster lacks.
UPSAMPLE_WARN_FACTOR = 4.0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def with_upsampling_warning(
    estimate: ExtractEstimate, inputs: RasterInputs, meta: ModelMetadata
) -> ExtractEstimate:
    """``estimate`` with a warning added when ``inputs`` are upsampled by more than
    :data:`UPSAMPLE_WARN_FACTOR` per side (the factor, what it costs, what to do instead)."""
    if inputs.scale is None or min(inputs.scale) <= 0:
        return estimate
    factor = 1.0 / min(inputs.scale)
    if factor <= UPSAMPLE_WARN_FACTOR * 1.01:  # 1 %: ground pixels of a map projection's scale
        return estimate
    model_m = meta.resolution_m
    warning = (
        f"The raster's {model_m * factor:.2f} m pixels are upsampled {factor:.1f}x per side "
        f"({factor * factor:.0f}x the pixels) to the model's {model_m:.2f} m: "
        f"{estimate.pixels / 1e6:.1f} Mpx, {estimate.temp_bytes / 1e6:.0f} MB of temporary "
        f"disk (the probability map) and roughly {_duration(estimate.eta_s)}, for no detail "
        f"the raster lacks. Use imagery near {model_m:.1f} m, or run at the raster's own "
        'pixels (--native-resolution; HTTP: "native_resolution": true).'
    )
    return replace(estimate, warnings=(*estimate.warnings, warning))


def extract(
    rgb: str | Path,
    out: str | Path,
    ms: str | Path | None = None,
    model: str | Path | torch.nn.Module | None = None,
    bbox: Bounds | None = None,
    bbox_crs: str | None = None,
    options: ExtractOptions | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    work_dir: str | Path | None = None,
    overwrite: bool = True,
    assume_crs: str | None = None,
) -> ExtractResult:
    """Extracts building polygons from ``rgb`` (+ ``ms``) into the GeoPackage ``out``.

    ``overwrite=False`` refuses an existing ``out`` (the CLI and the HTTP API pass the user's
    ``--overwrite`` / ``"overwrite"``); the output is checked before anything is read or run, and
    the temporary space the extraction needs (:mod:`.preflight`) before the network runs.
    ``assume_crs``: the CRS of rasters that have a geotransform but declare no CRS.
    """
    out = check_output(out, suffix=".gpkg", kind="GeoPackage", overwrite=overwrite)
    opts = options or ExtractOptions()
    started = time.perf_counter()
    device = pick_device(opts.device)
    with raster_env():
        with RasterInputs.open(
            rgb, ms, bbox=bbox, bbox_crs=bbox_crs, assume_crs=assume_crs
        ) as native:
            net = resolve_model(model, device)
            meta = net.metadata
            check_bands(native, meta, ms is not None)
            native_m = native.grid.pixel_size_m
        if opts.native_resolution:
            _warn_resolution(native_m, meta.resolution_m)
        inputs = processing_inputs(
            rgb, ms, meta, bbox, bbox_crs, assume_crs, opts.native_resolution
        )
        with inputs:
            estimate = check_temp_space(
                estimate_extract(
                    inputs.grid,
                    meta.num_classes,
                    tta=opts.tta,
                    device_kind=device.type,
                    work_dir=work_dir,
                    free_space=disk_free,
                )
            )
            estimate = with_upsampling_warning(estimate, inputs, meta)
            for warning in estimate.warnings:
                log.warning("%s", warning)
            log.info("Estimate: %s", estimate.to_dict())
            result = _extract(inputs, net, out, opts, device, progress, cancel, work_dir, started)
            result.warnings = list(estimate.warnings)
            return result


def _extract(
    inputs: RasterInputs,
    net: torch.nn.Module,
    out: str | Path,
    opts: ExtractOptions,
    device: torch.device,
    progress: ProgressCallback,
    cancel: CancelToken | None,
    work_dir: str | Path | None,
    started: float,
) -> ExtractResult:
    """The extraction on the open ``inputs`` (their grid is the processing grid)."""
    stages: dict[str, float] = {}
    meta = net.metadata
    grid_info = inputs.grid
    if inputs.resampled:
        log.info(
            "The raster is read resampled to the model's %.3f m pixels (%d x %d px)",
            meta.resolution_m,
            grid_info.width,
            grid_info.height,
        )
    normalizer = Normalizer.fit(meta.normalization, inputs)
    plan = plan_device(
        device,
        meta.encoder,
        meta.tile_size_px,
        opts.batch_size,
        opts.precision,
        opts.compile,
        opts.engine,
    )
    grid, overlap = scene_windows(grid_info.height, grid_info.width, meta, opts, plan)
    log.info(
        "%d windows of %d x %d px (overlap %d px), batch %d, %s, engine %s",
        grid.count,
        grid.tile_h,
        grid.tile_w,
        overlap,
        plan.batch_size,
        plan.precision,
        plan.engine,
    )
    writer = BuildingWriter(out, grid_info.crs)
    try:
        with scratch_dir("ternaus-extract-", work_dir) as tmp:
            store = ProbabilityStore(
                Path(tmp) / "probabilities.u8",
                grid_info.height,
                grid_info.width,
                meta.num_classes,
            )
            with PolygonStage(store, inputs.source_grid, meta, opts, writer, cancel) as post:
                t0 = time.perf_counter()
                predict_probabilities(
                    net,
                    inputs,
                    normalizer,
                    store,
                    grid,
                    overlap,
                    plan.batch_size,
                    device,
                    progress,
                    cancel,
                    tta=opts.tta,
                    plan=plan,
                    on_rows=post.rows_done,
                )
                stages["infer"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                clipped = post.finish(progress)
                stages["instances_polygons_tail"] = time.perf_counter() - t0
                stages["instances_polygons_busy"] = post.busy_s
    except BaseException:
        writer.abort()
        raise
    try:
        path = writer.commit()
    except OSError as exc:
        raise os_error(exc, out) from exc
    progress(ProgressEvent("done", writer.count, writer.count))
    return ExtractResult(
        path=path,
        count=writer.count,
        width_px=grid_info.width,
        height_px=grid_info.height,
        area_km2=grid_info.area_km2,
        seconds=time.perf_counter() - started,
        clipped=clipped,
        stages=stages,
        resolution_m=grid_info.pixel_size_m,
        resampled=inputs.resampled,
    )


def scene_windows(
    height: int, width: int, meta: ModelMetadata, opts: ExtractOptions, plan: DevicePlan
) -> tuple[WindowGrid, int]:
    """The window grid and overlap: the caller's tile size (and overlap, default the model's),
    else windows sized to the raster up to the device's limit with the plan's wider seam guard
    (fewer windows, and no seam artefacts)."""
    if opts.tile_size_px is not None:
        overlap = opts.overlap_px if opts.overlap_px is not None else meta.overlap_px
        overlap = min(overlap, opts.tile_size_px - 32)
        return window_grid(height, width, opts.tile_size_px, overlap), overlap
    tile = meta.tile_size_px
    if tile < 32 or tile % 32:
        raise ModelError(
            f"The model's tile size {tile} px is not a multiple of 32; pass a tile size "
            "(--tile 256 or 512) or fix the model's metadata."
        )
    overlap = opts.overlap_px
    if overlap is None:
        overlap = max(meta.overlap_px, plan.seam_guard_px)
    overlap = min(overlap, plan.max_tile_px // 2)
    return balanced_grid(height, width, plan.max_tile_px, overlap), overlap


#: Block side for rasters larger than one block: their blocks run alongside the network, so they
#: are kept small (peak memory of a 8192 px raster within 1.2x that of a 2048 px one).
CONCURRENT_BLOCK_PX = 1024


def stage_block_px(height: int, width: int, opts: ExtractOptions) -> int:
    """``opts.block_px`` when the raster is one block (it is processed after the network), else
    at most :data:`CONCURRENT_BLOCK_PX`."""
    if height <= opts.block_px and width <= opts.block_px:
        return opts.block_px
    return min(opts.block_px, CONCURRENT_BLOCK_PX)


class PolygonStage:
    """Instances -> polygons -> writer for each block whose rows are final, in a worker thread
    while the network still works on the rows below (issue 11: no core idles)."""

    def __init__(self, store, source_grid, meta, opts, writer, cancel) -> None:
        height, width, _ = store.shape
        self.store, self.writer, self.cancel = store, writer, cancel
        # Outlines are traced and simplified in pixels of the raster's whole processing grid
        # (whole-pixel offsets, so exact), then mapped to the CRS: the same building gives the
        # same polygon whatever extent or block it was extracted in.
        self.to_map, self.col_off, self.row_off = source_grid
        self.opts, self.thresholds = opts, opts.thresholds(meta.thresholds)
        # With a calibration, each building's confidence is its probability of being right
        # (from its mean body probability and its area in m², as the writer measures it).
        self.calibration = meta.calibration
        self._measure = GroundMeasure(writer.crs) if meta.calibration is not None else None
        self.specs = block_specs(height, width, stage_block_px(height, width, opts), opts.halo_px)
        self.futures: list[Future] = []
        self.busy_s = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ternaus-polygons")

    def __enter__(self) -> PolygonStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def rows_done(self, rows: int) -> None:
        """Queues the blocks that the first ``rows`` final rows complete; re-raises a failure."""
        for future in self.futures:
            if future.done() and future.exception() is not None:
                raise future.exception()
        while len(self.futures) < len(self.specs) and self.specs[len(self.futures)].r1 <= rows:
            self.futures.append(self._pool.submit(self._block, self.specs[len(self.futures)]))

    def finish(self, progress: ProgressCallback) -> int:
        """Waits for every block; returns how many instances were larger than the halo."""
        self.rows_done(self.store.shape[0])
        progress(ProgressEvent("instances", 0, len(self.futures)))
        clipped = 0
        for done, future in enumerate(self.futures, start=1):
            clipped += future.result()
            progress(ProgressEvent("instances", done, len(self.futures)))
        if clipped:
            log.warning(
                "%d buildings were larger than the %d px halo and may be cut at block seams",
                clipped,
                self.opts.halo_px,
            )
        return clipped

    def _block(self, spec: BlockSpec) -> int:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        started = time.perf_counter()
        block = block_instances(self.store, spec, self.thresholds)
        pixels = Affine.translation(self.col_off + block.col0, self.row_off + block.row0)
        outlines = label_polygons(block.labels, block.ids, pixels, self.thresholds.min_area_px)
        kept = [
            (outlines[int(i)], c)
            for i, c in zip(block.ids, block.confidence, strict=True)
            if int(i) in outlines
        ]
        finished = finish_polygons(
            [k[0] for k in kept], 1.0, self.opts.simplify_px, self.opts.regularize
        )
        polys = to_map([p for p in finished if p is not None], self.to_map)
        confs = [k[1] for k, p in zip(kept, finished, strict=True) if p is not None]
        if self.calibration is not None and confs:
            confs = list(self.calibration.apply(confs, self._measure.areas_m2(polys)))
        self.writer.write(polys, confs)
        self.busy_s += time.perf_counter() - started
        return block.clipped


def to_map(polygons: list, transform: Affine) -> list:
    """Polygons in pixel coordinates mapped to the CRS by the grid's ``transform``."""
    if not polygons:
        return []
    a, b, c, d, e, f = tuple(transform)[:6]

    def affine(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack((a * x + b * y + c, d * x + e * y + f))

    return list(shapely.transform(np.asarray(polygons, dtype=object), affine))


def _warn_resolution(pixel_m: float, model_m: float) -> None:
    """Read at its own resolution on request: warn when that is far from the model's."""
    if model_m > 0 and not 0.5 <= pixel_m / model_m <= 2.0:
        log.warning(
            "The raster's pixels are %.2f m but the model was trained at %.2f m and resampling "
            "is off (native resolution); results may be poor. Leave resampling on, or resample "
            "the raster to about %.2f m.",
            pixel_m,
            model_m,
            model_m,
        )
