"""From requests to job functions: cheap checks at submission, the pipeline calls in the job.

Each ``*_job`` function checks what can be checked at once (paths inside the allowed folders,
else 403; files exist, output folders exist, else 400) and returns the function the job manager
runs. The work itself is done by the same functions the CLI calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from ternaus_backend.api.allowed_folders import AllowedFolders
from ternaus_backend.api.jobs import JobContext, JobFunction, JobOutcome, plain
from ternaus_backend.api.results import (
    ChangesResult,
    CompareResult,
    EvaluateResult,
    PredictResult,
    TrainResult,
    WhereToLabelResult,
)
from ternaus_backend.api.schemas import (
    ChangesRequest,
    CompareRequest,
    EvaluateRequest,
    PredictRequest,
    TrainRequest,
    WhereToLabelRequest,
)
from ternaus_backend.api.uploads import check_upload_input
from ternaus_backend.device import pick_device
from ternaus_backend.errors import CancelledError, InputError, ModelError
from ternaus_backend.network_files import check_local_file
from ternaus_backend.outputs import check_output
from ternaus_backend.progress import ProgressEvent
from ternaus_backend.settings import Settings

PREDICT_OUTPUT = "buildings.gpkg"
EVALUATE_OUTPUT = "evaluation.gpkg"
COMPARE_OUTPUT = "map_gaps.gpkg"
CHANGES_OUTPUT = "changes.gpkg"
TRAIN_OUTPUT = "model.safetensors"
WHERE_TO_LABEL_OUTPUT = "where_to_label.gpkg"


# ------------------------------------------------------------------------------ checks


def absolute(path: Path) -> Path:
    """``path`` with ``~`` expanded, relative to the backend's working folder if relative."""
    return Path(path).expanduser().absolute()


def existing_file(path: Path, role: str, folders: AllowedFolders) -> Path:
    """The resolved ``path``; ForbiddenPathError outside ``folders`` (whether it exists or not),
    InputError when it reaches the network, is missing or is not a file."""
    check_local_file(path, role)
    full = folders.check(path, role)
    if folders.uploads_root is not None:  # an unfinished upload, an upload's record: 403
        check_upload_input(full, folders.uploads_root, role)
    try:
        exists, is_file = full.exists(), full.is_file()
    except OSError as error:  # e.g. a name too long for the file system
        raise _unusable(role, full, error) from error
    if not exists:
        raise InputError(
            f"The {role} {full} does not exist; check the path (on the backend's machine)."
        )
    if not is_file:
        raise InputError(f"The {role} {full} is a folder, not a file; give the file's path.")
    return full


def optional_file(path: Path | None, role: str, folders: AllowedFolders) -> Path | None:
    """:func:`existing_file` for an optional input (None stays None)."""
    return None if path is None else existing_file(path, role, folders)


def _unusable(role: str, path: Path, error: OSError) -> InputError:
    """The error for a path the file system refuses to look at."""
    shown = str(path) if len(str(path)) <= 120 else str(path)[:117] + "..."
    return InputError(
        f"The {role} path {shown} cannot be used ({error.strerror or error}); give a valid path."
    )


def output_file(
    path: Path | None, role: str, suffix: str, folders: AllowedFolders, overwrite: bool = True
) -> Path | None:
    """The resolved output path (None stays None); it must lie inside ``folders`` (else 403), its
    folder must exist and be writable, and an existing file is refused unless ``overwrite``."""
    if path is None:
        return None
    full = folders.check(path, role)
    if full.suffix.lower() != suffix:
        raise InputError(f"The {role} {full} must end in {suffix}; rename it.")
    try:
        parent_ok, is_dir = full.parent.is_dir(), full.is_dir()
    except OSError as error:
        raise _unusable(role, full, error) from error
    if not parent_ok:
        raise InputError(f"The folder of the {role} {full.parent} does not exist; create it first.")
    if is_dir:
        raise InputError(f"The {role} {full} is a folder; give a file name ending in {suffix}.")
    return check_output(full, suffix=suffix, kind=role, overwrite=overwrite)


def default_model(settings: Settings) -> Path:
    """The model used when a request names none: TERNAUS_DEFAULT_MODEL, else the embedded one."""
    from ternaus_backend.pipeline.extract import DEFAULT_MODEL

    if settings.default_model is not None:
        path = absolute(settings.default_model)
        if not path.is_file():
            raise ModelError(
                f"The configured default model {path} does not exist; fix TERNAUS_DEFAULT_MODEL "
                "or send a model path."
            )
        return path
    if not DEFAULT_MODEL.is_file():
        raise ModelError(
            "No model was given and no default model is installed; send a model file path "
            "('model'), or set TERNAUS_DEFAULT_MODEL.",
            details=f"expected the embedded default model at {DEFAULT_MODEL}",
        )
    return DEFAULT_MODEL


Result = TypeVar("Result", bound=BaseModel)


def _result(result_model: type[Result], /, **values: Any) -> Result:
    """The job's ``result_model`` from ``values`` made JSON-safe (numpy scalars, paths)."""
    return result_model.model_validate(plain(values))


# ------------------------------------------------------------------------------ predict


def predict_job(
    request: PredictRequest, settings: Settings, folders: AllowedFolders
) -> tuple[JobFunction, dict[str, Any]]:
    """Checks a predict request, including its pre-flight estimate (InputError when the
    temporary cannot fit on the disk); returns the job, which runs
    :func:`~ternaus_backend.pipeline.extract.extract`, and the estimate."""
    from ternaus_backend.pipeline.extract import extract, preflight

    rgb = existing_file(request.rgb, "RGB raster", folders)
    ms = optional_file(request.ms, "multispectral raster", folders)
    model = (
        existing_file(request.model, "model file", folders)
        if request.model is not None
        else default_model(settings)
    )
    out = output_file(
        request.out, "output GeoPackage", ".gpkg", folders, overwrite=request.overwrite
    )
    options = request.options
    pick_device(options.device)
    estimate = preflight(
        rgb,
        ms,
        model,
        bbox=request.bbox,
        bbox_crs=request.bbox_crs,
        options=options,
        work_dir=settings.work_dir,
        assume_crs=request.assume_crs,
    )

    if _for_cluster(settings, request, estimate):
        job = _cluster_predict(
            settings, rgb, ms, model, out, options, request, list(estimate.warnings)
        )
        return job, {
            **estimate.to_dict(),
            "cluster": settings.dask_scheduler,
        }

    def run(context: JobContext) -> JobOutcome:
        target = out or context.work_dir / PREDICT_OUTPUT
        result = extract(
            rgb,
            target,
            ms=ms,
            model=model,
            bbox=request.bbox,
            bbox_crs=request.bbox_crs,
            options=options,
            progress=context.progress,
            cancel=context.cancel,
            work_dir=context.work_dir,
            overwrite=request.overwrite or out is None,
            assume_crs=request.assume_crs,
        )
        summary = _result(
            PredictResult,
            out=result.path,
            buildings=result.count,
            width_px=result.width_px,
            height_px=result.height_px,
            area_km2=round(result.area_km2, 6),
            resolution_m=round(result.resolution_m, 4),
            resampled=result.resampled,
            seconds=round(result.seconds, 3),
            clipped=result.clipped,
            stages=result.stages,
            model=model,
            warnings=result.warnings,
        )
        return JobOutcome(summary, file=result.path)

    return run, estimate.to_dict()


def _for_cluster(settings: Settings, request: PredictRequest, estimate) -> bool:
    """Whether a predict job goes to the configured Dask cluster: one is set, the job is large
    enough, and it is a whole raster (blocks cover whole rasters)."""
    return (
        settings.dask_scheduler is not None
        and estimate.pixels >= settings.dask_min_megapixels * 1e6
        and request.bbox is None
        and request.assume_crs is None
    )


def _cluster_predict(
    settings, rgb, ms, model, out, options, request, warnings: list[str]
) -> JobFunction:
    """The job: :func:`~ternaus_backend.distributed.cluster.extract_on_cluster` on the configured
    scheduler, blocks reported as progress, cancel checked as blocks finish."""
    from ternaus_backend.distributed.cluster import extract_on_cluster

    def run(context: JobContext) -> JobOutcome:
        target = out or context.work_dir / PREDICT_OUTPUT

        def on_block(done, finished: int, total: int) -> None:
            context.progress(ProgressEvent("infer", finished, total, {"block": done.name}))
            context.cancel.raise_if_cancelled()

        result = extract_on_cluster(
            rgb,
            target,
            settings.dask_scheduler,
            ms=ms,
            model=model,
            options=options,
            overwrite=request.overwrite or out is None,
            on_block=on_block,
        )
        summary = _result(
            PredictResult,
            out=result.path,
            buildings=result.count,
            area_km2=round(result.area_km2, 6),
            seconds=round(result.seconds, 3),
            cluster=settings.dask_scheduler,
            blocks=result.blocks,
            model=model,
            warnings=warnings,  # the pre-flight's (the cluster reads the same rasters)
        )
        return JobOutcome(summary, file=result.path)

    return run


# ------------------------------------------------------------------------------ evaluate


def evaluate_job(request: EvaluateRequest, folders: AllowedFolders) -> JobFunction:
    """Checks an evaluate request; the job scores the files by the SpaceNet rules and writes
    the error layers (``result`` with ``match`` and ``iou``, ``missed``)."""
    from ternaus_backend.evaluation.error_layers import evaluate_layers

    pred = existing_file(request.pred, "prediction file", folders)
    truth = existing_file(request.truth, "ground-truth file", folders)
    area = optional_file(request.area, "area file", folders)
    out = output_file(request.out, "error layers GeoPackage", ".gpkg", folders)

    def evaluate(target: Path) -> Any:
        return evaluate_layers(pred, truth, target, area, request.iou_threshold, request.min_area)

    inputs = {"pred": pred, "truth": truth, "area": area, "iou_threshold": request.iou_threshold}
    return _one_step_job(
        EvaluateResult,
        evaluate,
        out,
        EVALUATE_OUTPUT,
        {**inputs, "layers": ["result", "missed"]},
    )


def _one_step_job(
    model: type[BaseModel],
    compute: Callable[[Path], Any],
    out: Path | None,
    default_name: str,
    inputs: dict[str, Any],
) -> JobFunction:
    """A job that runs ``compute(output path)`` once (``out``, else ``default_name`` in the
    job's folder) between two progress events of its stage (the ``kind`` of its result
    ``model``); its result is the outcome's ``to_dict()`` with ``inputs`` and ``out``, and the
    file ``out``."""
    stage = model.model_fields["kind"].default

    def run(context: JobContext) -> JobOutcome:
        context.cancel.raise_if_cancelled()
        context.progress(ProgressEvent(stage, 0, 1))
        outcome = compute(out or context.work_dir / default_name)
        context.progress(ProgressEvent(stage, 1, 1))
        result = _result(model, **{**outcome.to_dict(), **inputs, "out": outcome.out})
        return JobOutcome(result, file=outcome.out)

    return run


# ------------------------------------------------------------------------------ compare, changes


def compare_job(request: CompareRequest, folders: AllowedFolders) -> JobFunction:
    """Checks a compare request; the job matches our result with the map's buildings after
    their offset and writes the layers ``unmapped``, ``unseen`` and ``offsets``."""
    from ternaus_backend.evaluation.map_gaps import compare_with_map

    pred = existing_file(request.pred, "result file", folders)
    reference = existing_file(request.reference, "reference layer", folders)
    area = optional_file(request.area, "area file", folders)
    out = output_file(request.out, "comparison GeoPackage", ".gpkg", folders)

    def compare(target: Path) -> Any:
        return compare_with_map(
            pred, reference, target, area, request.iou_threshold, request.cell_m, request.min_pairs
        )

    inputs = {"pred": pred, "reference": reference, "area": area}
    return _one_step_job(CompareResult, compare, out, COMPARE_OUTPUT, inputs)


def changes_job(request: ChangesRequest, folders: AllowedFolders) -> JobFunction:
    """Checks a changes request; the job matches the two dates' buildings after their offset
    and writes the layers ``new``, ``demolished`` and ``changed``."""
    from ternaus_backend.evaluation.changes import detect_changes

    if request.change_iou < request.match_iou:
        raise InputError(
            f"change_iou ({request.change_iou}) must not be below match_iou "
            f"({request.match_iou}): a matched pair below it counts as changed."
        )
    before = existing_file(request.before, "earlier layer", folders)
    after = existing_file(request.after, "later layer", folders)
    area = optional_file(request.area, "area file", folders)
    out = output_file(request.out, "changes GeoPackage", ".gpkg", folders)

    def changes(target: Path) -> Any:
        return detect_changes(before, after, target, area, request.match_iou, request.change_iou)

    inputs = {"before_path": before, "after_path": after, "area": area}
    return _one_step_job(ChangesResult, changes, out, CHANGES_OUTPUT, inputs)


# ------------------------------------------------------------------------------ where to label


def where_to_label_job(
    request: WhereToLabelRequest, settings: Settings, folders: AllowedFolders
) -> JobFunction:
    """Checks a where-to-label request; the job runs the model over the image and ranks the
    cells (:func:`~ternaus_backend.evaluation.where_to_label.propose_cells`), writing the
    layers ``cells`` and ``buildings``."""
    from ternaus_backend.evaluation.where_to_label import propose_cells
    from ternaus_backend.pipeline.options import ExtractOptions

    rgb = existing_file(request.rgb, "RGB raster", folders)
    ms = optional_file(request.ms, "multispectral raster", folders)
    model = (
        existing_file(request.model, "model file", folders)
        if request.model is not None
        else default_model(settings)
    )
    aoi = optional_file(request.aoi, "area file", folders)
    exclude = optional_file(request.exclude, "labelled area file", folders)
    out = output_file(request.out, "cells GeoPackage", ".gpkg", folders, request.overwrite)
    pick_device(request.device)

    def run(context: JobContext) -> JobOutcome:
        proposal = propose_cells(
            rgb,
            out or context.work_dir / WHERE_TO_LABEL_OUTPUT,
            ms=ms,
            model=model,
            aoi=aoi,
            bbox=request.bbox,
            bbox_crs=request.bbox_crs,
            cell_m=request.cell_m,
            exclude=exclude,
            top=request.top,
            options=ExtractOptions(device=request.device),
            progress=context.progress,
            cancel=context.cancel,
            work_dir=context.work_dir,
            overwrite=request.overwrite or out is None,
        )
        summary = _result(WhereToLabelResult, **proposal.to_dict(), rgb=rgb, model=model, aoi=aoi)
        return JobOutcome(summary, file=proposal.out)

    return run


# ------------------------------------------------------------------------------ train


def _train_summary(result: Any) -> TrainResult:
    """The job's result from the training's outcome
    (:class:`ternaus_backend.training.config.TrainResult`)."""
    return _result(TrainResult, **dataclasses.asdict(result))


def train_job(request: TrainRequest, folders: AllowedFolders) -> JobFunction:
    """Checks a train request; the job runs :func:`~ternaus_backend.training.loop.train`."""
    from ternaus_backend.training.loop import TrainConfig, train

    sources = []
    for source in request.sources:
        optional = {
            name: optional_file(getattr(source, name), role, folders)
            for name, role in (
                ("ms", "multispectral raster"),
                ("labels", "labels file"),
                ("aoi", "training area"),
                ("val_aoi", "validation area"),
            )
        }
        sources.append(
            source.model_copy(
                update={
                    "rgb": existing_file(source.rgb, "RGB raster", folders),
                    **optional,
                }
            )
        )
    init = optional_file(request.init, "model to fine-tune", folders)
    out = output_file(
        request.out,
        "model file",
        ".safetensors",
        folders,
        overwrite=request.overwrite or request.resume,
    )
    if request.resume and out is None:
        raise InputError("'resume' continues an earlier run: send 'out', that run's model path.")
    pick_device(request.device)
    fields = request.model_dump(exclude={"sources", "init", "out"})

    def run(context: JobContext) -> JobOutcome:
        config = TrainConfig(
            **fields, sources=sources, init=init, out=out or context.work_dir / TRAIN_OUTPUT
        )
        try:
            result = train(config, progress=context.progress, cancel=context.cancel)
        except CancelledError as exc:
            partial = getattr(exc, "result", None)
            if partial is None:
                raise
            return JobOutcome(_train_summary(partial), file=partial.model_path, cancelled=True)
        return JobOutcome(_train_summary(result), file=result.model_path)

    return run
