"""Jobs: submit (predict, evaluate, compare, changes, where_to_label, train), list, poll, cancel,
download the result, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse, JSONResponse

from ternaus_backend.api.allowed_folders import job_download
from ternaus_backend.api.deps import FoldersDep, JobsDep, SettingsDep
from ternaus_backend.api.errors import ConflictError, GoneError
from ternaus_backend.api.jobs import JobFunction, JobKind, JobManager
from ternaus_backend.api.runners import (
    changes_job,
    compare_job,
    evaluate_job,
    predict_job,
    train_job,
    where_to_label_job,
)
from ternaus_backend.api.schemas import (
    ERROR_RESPONSES,
    SUBMIT_RESPONSES,
    ChangesRequest,
    CompareRequest,
    EvaluateRequest,
    JobOut,
    PredictRequest,
    TrainRequest,
    WhereToLabelRequest,
)

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERROR_RESPONSES)

MEDIA_TYPES = {".gpkg": "application/geopackage+sqlite3"}

StatusFilter = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


def _submit(
    jobs: JobManager,
    kind: JobKind,
    request,
    function: JobFunction,
    response: Response,
    estimate: dict | None = None,
) -> JobOut:
    job = JobOut.from_snapshot(
        jobs.submit(kind, request.model_dump(mode="json"), function, estimate)
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


@router.post(
    "/predict",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
    summary="Start an extraction",
)
def submit_predict(
    body: PredictRequest,
    jobs: JobsDep,
    settings: SettingsDep,
    folders: FoldersDep,
    response: Response,
) -> JobOut:
    """Extract building polygons into a GeoPackage (layer ``buildings``); poll the job, then
    download the file from ``result_url``. The job's ``estimate`` says what it will take; a job
    whose temporary cannot fit on the disk is refused (400)."""
    function, estimate = predict_job(body, settings, folders)
    return _submit(jobs, "predict", body, function, response, estimate)


@router.post(
    "/evaluate",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
    summary="Start an evaluation",
)
def submit_evaluate(
    body: EvaluateRequest, jobs: JobsDep, folders: FoldersDep, response: Response
) -> JobOut:
    """SpaceNet F1 of predictions against ground truth; the result has tp, fp, fn, precision,
    recall and f1."""
    return _submit(jobs, "evaluate", body, evaluate_job(body, folders), response)


@router.post(
    "/compare",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
    summary="Compare a result with a map's buildings",
)
def submit_compare(
    body: CompareRequest, jobs: JobsDep, folders: FoldersDep, response: Response
) -> JobOut:
    """What the map is missing: buildings seen and not mapped (``unmapped``, ranked by
    confidence), mapped and not seen (``unseen``), and the map's offset (``offset``: dx_m, dy_m,
    overall and per grid cell in the ``offsets`` layer). The result has the counts; the
    GeoPackage is at ``result_url``."""
    return _submit(jobs, "compare", body, compare_job(body, folders), response)


@router.post(
    "/changes",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
    summary="Find what changed between two dates",
)
def submit_changes(
    body: ChangesRequest, jobs: JobsDep, folders: FoldersDep, response: Response
) -> JobOut:
    """Buildings new, demolished, changed (matched below ``change_iou``) and unchanged between
    two dates' layers; the result has the counts, the GeoPackage is at ``result_url``."""
    return _submit(jobs, "changes", body, changes_job(body, folders), response)


@router.post(
    "/where_to_label",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
    summary="Propose cells to label next",
)
def submit_where_to_label(
    body: WhereToLabelRequest,
    jobs: JobsDep,
    settings: SettingsDep,
    folders: FoldersDep,
    response: Response,
) -> JobOut:
    """Where to label next: the model runs over the image (flip TTA) and square cells of
    ``cell_m`` metres are ranked by how unsure it is there (``score`` = share of the cell near
    the body threshold + share where the flips disagree + share covered by buildings of low
    confidence; ``rank`` 1 first). The result has the ``top`` cells; the GeoPackage (layers
    ``cells`` and ``buildings``) is at ``result_url``."""
    function = where_to_label_job(body, settings, folders)
    return _submit(jobs, "where_to_label", body, function, response)


@router.post(
    "/train",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
    summary="Start a training run",
)
def submit_train(
    body: TrainRequest, jobs: JobsDep, folders: FoldersDep, response: Response
) -> JobOut:
    """Train or fine-tune a model; the best model is saved to ``out`` (or the job's folder) and
    can be downloaded from ``result_url``. Cancelling keeps the best model so far."""
    return _submit(jobs, "train", body, train_job(body, folders), response)


@router.get("", response_model=list[JobOut], summary="All jobs")
def list_jobs(
    jobs: JobsDep, kind: JobKind | None = None, status: StatusFilter | None = None
) -> list[JobOut]:
    """All jobs, oldest first, optionally filtered; jobs of earlier runs of the backend stay
    listed until TERNAUS_JOB_RETENTION_DAYS after they finished (those that were queued or
    running when it stopped say ``interrupted``)."""
    return [JobOut.from_snapshot(s) for s in jobs.list_jobs(kind=kind, status=status)]


@router.get("/{job_id}", response_model=JobOut, summary="One job")
def get_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Status, latest progress, result or error of a job."""
    return JobOut.from_snapshot(jobs.get(job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a job")
def cancel_job(job_id: str, jobs: JobsDep) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next check (poll until its
    status is ``cancelled``); a finished job is left as it is."""
    return JobOut.from_snapshot(jobs.cancel(job_id))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a job")
def delete_job(job_id: str, jobs: JobsDep) -> Response:
    """Forget a finished job and remove its folder (outputs written there by default go too;
    outputs written to a path of your own stay)."""
    jobs.delete(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id}/result",
    summary="Download a job's output",
    responses={
        200: {
            "description": "the output file (GeoPackage, model) or the result as JSON",
            "content": {"application/geopackage+sqlite3": {}, "application/octet-stream": {}},
        }
    },
)
def job_result(job_id: str, jobs: JobsDep) -> Response:
    """The GeoPackage of a predict job, the model file of a train job, the scores of an
    evaluate job (JSON). Only regular files inside the job's folder are served: an output written
    to a path of the request's own stays where it is (403)."""
    job, path = jobs.result_file(job_id)
    work_dir = Path(job["work_dir"])
    if job["result"] is None:
        if job["status"] in ("queued", "running"):
            raise ConflictError(
                f"Job {job_id} is {job['status']}; poll GET /v1/jobs/{job_id} "
                "until its status is succeeded, then ask again."
            )
        raise ConflictError(
            f"Job {job_id} {job['status']} without a result; see its error (GET /v1/jobs/{job_id})."
        )
    if path is None:
        return JSONResponse(job["result"])
    served = job_download(path, work_dir, job_id)
    if served is None:
        raise GoneError(
            f"The output {path} of job {job_id} was moved or removed; run the job again."
        )
    media = MEDIA_TYPES.get(served.suffix.lower(), "application/octet-stream")
    return FileResponse(served, media_type=media, filename=served.name)
