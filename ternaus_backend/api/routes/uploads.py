"""Uploads: inputs sent in chunks by a client on another machine, then named in jobs by path."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, Field

from ternaus_backend.api.schemas import ERROR_RESPONSES
from ternaus_backend.api.uploads import CHUNK_BYTES, UploadState, UploadStore


class UploadCreate(BaseModel):
    """A file about to be sent in chunks."""

    name: str = Field(min_length=1, max_length=255, description="file name, e.g. scene.tif")
    size: int = Field(ge=0, le=1 << 42, description="size in bytes")
    sha256: str | None = Field(None, description="SHA-256 of the whole file, checked at the end")


class UploadOut(BaseModel):
    """An upload's state; ``path`` (on the backend's machine) once complete."""

    id: str
    name: str
    size: int
    received: int = Field(description="bytes received so far")
    ranges: list[list[int]] = Field(description="received [start, end) byte ranges")
    complete: bool
    path: str | None = None
    chunk_bytes: int = Field(CHUNK_BYTES, description="the chunk size to send")

    @classmethod
    def from_state(cls, state: UploadState) -> UploadOut:
        return cls(
            id=state.id,
            name=state.name,
            size=state.size,
            received=state.received,
            ranges=state.ranges,
            complete=state.complete,
            path=state.path,
        )


router = APIRouter(prefix="/uploads", tags=["uploads"], responses=ERROR_RESPONSES)


def get_uploads(request: Request) -> UploadStore:
    """The app's upload store."""
    return request.app.state.uploads


UploadsDep = Annotated[UploadStore, Depends(get_uploads)]


@router.post(
    "", response_model=UploadOut, status_code=status.HTTP_201_CREATED, summary="Start an upload"
)
def create_upload(body: UploadCreate, uploads: UploadsDep, response: Response) -> UploadOut:
    """Declare a file (name, size, SHA-256); then PUT its chunks and complete it."""
    state = uploads.create(body.name, body.size, body.sha256)
    response.headers["Location"] = f"/v1/uploads/{state.id}"
    return UploadOut.from_state(state)


@router.get("/{upload_id}", response_model=UploadOut, summary="What of an upload has arrived")
def get_upload(upload_id: str, uploads: UploadsDep) -> UploadOut:
    """The byte ranges received so far (to resume), and the path once complete."""
    return UploadOut.from_state(uploads.get(upload_id))


@router.put(
    "/{upload_id}",
    response_model=UploadOut,
    summary="Send one chunk",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        }
    },
)
async def put_chunk(
    upload_id: str,
    request: Request,
    uploads: UploadsDep,
    offset: Annotated[int, Query(ge=0, description="byte offset of this chunk in the file")] = 0,
) -> UploadOut:
    """The request body (raw bytes) is written at ``offset``; sending a chunk again is harmless."""
    return UploadOut.from_state(await uploads.write(upload_id, offset, request.stream()))


@router.post("/{upload_id}/complete", response_model=UploadOut, summary="Finish an upload")
def complete_upload(upload_id: str, uploads: UploadsDep) -> UploadOut:
    """Checks size and SHA-256; the answer's ``path`` is what jobs take as input."""
    return UploadOut.from_state(uploads.complete(upload_id))


@router.delete("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an upload")
def delete_upload(upload_id: str, uploads: UploadsDep) -> Response:
    """Removes the file (jobs that already read it keep their results)."""
    uploads.delete(upload_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
