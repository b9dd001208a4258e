"""Files sent to the backend in chunks, for clients on another machine (a remote QGIS).

An upload is created with its name, size and SHA-256; chunks are written at their byte offset (a
chunk sent twice is simply written twice, so a client retries only the chunk that failed); when
every byte has arrived and the checksum matches, the file moves to its final name and its path
can be given to a job like any path on the backend's machine. Uploads live in
``<work folder>/uploads/<id>/``, inside the folders jobs may read: the backend's record
``upload.json`` and, while bytes arrive, ``incoming.part``; the finished file goes to
``data/<name>``, apart from the record, whatever its name. Jobs may read only that finished file
(:func:`check_upload_input`). Uploads last written more than ``retention_days`` ago are removed
(at startup and when a new upload starts), unless a queued or running job names them.

Chunks of one upload may arrive at once; completing it waits for the chunks being written and
then refuses new ones (409), so a late chunk never changes a finished file. Creating an upload
reserves its size: the declared sizes of unfinished uploads, less what has arrived, must fit in
the free space of the work folder's disk (else 413), and at most ``max_open`` uploads may be
unfinished at once (else 429).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ternaus_backend.api.errors import (
    ConflictError,
    ForbiddenPathError,
    NotFoundError,
    TooManyUploadsError,
    UploadTooLargeError,
)
from ternaus_backend.errors import InputError

log = logging.getLogger(__name__)

#: Chunk size clients are told to use (bytes); the request body limit must allow it.
CHUNK_BYTES = 8 * 1024 * 1024
_ID = re.compile(r"^[0-9a-f]{32}$")
#: The backend's record of an upload, in its folder (never a user's file: those are in data/).
RECORD = "upload.json"
#: The bytes of an unfinished upload, in its folder.
INCOMING = "incoming.part"
#: The folder of the finished file, in the upload's folder.
DATA = "data"
#: How long completing waits for chunks still being written (seconds).
COMPLETE_WAIT_S = 120.0


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk holding ``folder`` (or its nearest existing parent)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f}" if n >= 10e6 else f"{n / 1e6:.1f}"


@dataclass
class _Gate:
    """Who is using one upload now: chunks being written, or a completion under way."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    writers: int = 0
    completing: bool = False


@dataclass
class UploadState:
    """What the backend knows of one upload (stored as ``upload.json`` in its folder)."""

    id: str
    name: str
    size: int
    sha256: str | None
    ranges: list[list[int]] = field(default_factory=list)  # received [start, end) byte ranges
    path: str | None = None  # set when complete

    @property
    def received(self) -> int:
        return sum(end - start for start, end in self.ranges)

    @property
    def complete(self) -> bool:
        return self.path is not None

    def add_range(self, start: int, end: int) -> None:
        """Merge ``[start, end)`` into the received ranges."""
        merged: list[list[int]] = []
        for lo, hi in sorted([*self.ranges, [start, end]]):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.ranges = merged


def safe_name(name: str) -> str:
    """The file name part of ``name`` with only harmless characters (it keeps its suffix)."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.-]+", "_", base).strip("._")
    if not cleaned:
        raise InputError(f"The upload name {name!r} has no usable file name: send e.g. scene.tif.")
    return cleaned[:120]


class UploadStore:
    """Uploads under ``root``; thread-safe.

    ``retention_days`` (0: for ever): how long an upload is kept after its last write;
    ``in_use()`` returns text (the requests of unfinished jobs) whose upload ids are kept;
    ``users(upload_id)`` names the unfinished jobs that read an upload (it is not deleted while
    any does); ``max_open``: how many uploads may be unfinished at once (None: no limit).
    """

    def __init__(
        self,
        root: Path,
        retention_days: float = 0,
        in_use: Callable[[], str] | None = None,
        users: Callable[[str], list[str]] | None = None,
        max_open: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.retention_s = retention_days * 86400.0
        self.max_open = max_open
        self._in_use = in_use or (lambda: "")
        self._users = users or (lambda upload_id: [])
        self._lock = threading.Lock()  # creating uploads (the reservation), the gates
        self._gates: dict[str, _Gate] = {}

    def clean(self, now: float | None = None) -> list[str]:
        """Removes the uploads last written more than the retention before ``now`` (seconds
        since the epoch) that no unfinished job names; returns their ids."""
        if self.retention_s <= 0 or not self.root.is_dir():
            return []
        cutoff = (time.time() if now is None else now) - self.retention_s
        busy = self._in_use()
        removed = []
        for folder in self.root.iterdir():
            if not _ID.match(folder.name) or not folder.is_dir() or folder.is_symlink():
                continue
            try:
                data = folder / DATA
                inside = [*folder.iterdir(), *(data.iterdir() if data.is_dir() else [])]
                written = max(p.stat().st_mtime for p in [folder, *inside])
            except OSError:  # removed meanwhile
                continue
            if written < cutoff and folder.name not in busy:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        if removed:
            log.info(
                "removed %d upload(s) older than %g days", len(removed), self.retention_s / 86400
            )
        return removed

    def create(self, name: str, size: int, sha256: str | None) -> UploadState:
        """A new, empty upload of ``size`` bytes; its size is reserved on the disk.

        UploadTooLargeError (413) when it does not fit beside the unfinished uploads,
        TooManyUploadsError (429) when ``max_open`` uploads are unfinished."""
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise InputError("sha256 must be 64 hexadecimal digits (or left out).")
        state = UploadState(uuid.uuid4().hex, safe_name(name), size, sha256 and sha256.lower())
        self.clean()
        with self._lock:
            unfinished = [u for u in self._states() if not u.complete]
            if self.max_open is not None and len(unfinished) >= self.max_open:
                raise TooManyUploadsError(
                    f"{len(unfinished)} uploads are unfinished; complete them (POST "
                    "/v1/uploads/{id}/complete) or delete them (DELETE /v1/uploads/{id}) before "
                    "starting another, or start the backend with a larger "
                    "TERNAUS_MAX_OPEN_UPLOADS."
                )
            promised = sum(max(0, u.size - u.received) for u in unfinished)
            free = free_bytes(self.root)
            available = max(0, free - promised)
            if size > available:
                held = (
                    f" ({_mb(promised)} MB of the {_mb(free)} MB on the disk are reserved for "
                    f"{len(unfinished)} unfinished upload(s))"
                    if promised
                    else ""
                )
                raise UploadTooLargeError(
                    f"disk full: {_mb(available)} MB free, the upload needs {_mb(size)} MB"
                    f"{held}. Free space in the backend's work folder ({self.root.parent}), "
                    "finish or delete other uploads, or send a smaller extent."
                )
            folder = self.root / state.id
            folder.mkdir(parents=True)
            try:
                with open(folder / INCOMING, "wb") as data:
                    data.truncate(size)
                self._save(state)
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return state

    def _states(self) -> list[UploadState]:
        """Every upload that can be read (for the reservation and the limit)."""
        if not self.root.is_dir():
            return []
        states = []
        for folder in self.root.iterdir():
            if not _ID.match(folder.name):
                continue
            try:
                states.append(UploadState(**json.loads((folder / RECORD).read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return states

    def get(self, upload_id: str) -> UploadState:
        """The upload's state; ``NotFoundError`` for an unknown id."""
        meta = self._folder(upload_id) / RECORD
        if not meta.is_file():
            raise NotFoundError(
                f"No upload {upload_id}: it finished long ago or never existed; start a new one."
            )
        return UploadState(**json.loads(meta.read_text()))

    def _gate(self, upload_id: str) -> _Gate:
        with self._lock:
            return self._gates.setdefault(upload_id, _Gate())

    async def write(self, upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> UploadState:
        """Write the request body streamed in ``chunks`` at ``offset``; ConflictError (409) once
        the upload is complete or being completed."""
        gate = self._gate(upload_id)
        with gate.cond:
            if gate.completing:
                raise ConflictError(
                    f"Upload {upload_id} is being completed; no more chunks are taken. Start a "
                    "new upload to send the file again."
                )
            gate.writers += 1
        try:
            state = self.get(upload_id)
            if state.complete:
                raise ConflictError(
                    f"Upload {upload_id} is complete; start a new one to send again."
                )
            if not 0 <= offset <= state.size:
                raise InputError(f"offset {offset} lies outside the upload's {state.size} bytes.")
            end = offset
            with open(self._part(state), "r+b") as data:
                data.seek(offset)
                async for chunk in chunks:
                    if end + len(chunk) > state.size:
                        raise InputError(
                            f"The chunk at offset {offset} runs past the upload's {state.size} "
                            "bytes: send the declared size only."
                        )
                    data.write(chunk)
                    end += len(chunk)
            with gate.cond:
                state = self.get(upload_id)
                if end > offset:
                    state.add_range(offset, end)
                self._save(state)
            return state
        finally:
            with gate.cond:
                gate.writers -= 1
                gate.cond.notify_all()

    def complete(self, upload_id: str, wait_s: float = COMPLETE_WAIT_S) -> UploadState:
        """Waits for the chunks being written, refuses new ones, checks that every byte arrived
        and the checksum matches, then moves the file to ``data/<name>``."""
        self.get(upload_id)
        gate = self._gate(upload_id)
        with gate.cond:
            if gate.completing:
                raise ConflictError(
                    f"Upload {upload_id} is already being completed; GET it to see when it is."
                )
            gate.completing = True
            if not gate.cond.wait_for(lambda: gate.writers == 0, timeout=wait_s):
                gate.completing = False
                raise ConflictError(
                    f"Chunks of upload {upload_id} are still arriving after {wait_s:.0f} s; "
                    "complete it once every chunk has been answered."
                )
        try:
            return self._complete(upload_id)
        finally:
            with gate.cond:
                gate.completing = False

    def _complete(self, upload_id: str) -> UploadState:
        state = self.get(upload_id)
        if state.complete:
            return state
        if state.ranges != [[0, state.size]] and state.size > 0:
            missing = state.size - state.received
            raise ConflictError(
                f"Upload {upload_id} misses {missing} of {state.size} bytes; send the "
                "missing chunks (GET the upload lists what arrived), then complete it."
            )
        part = self._part(state)
        if state.sha256 and _sha256(part) != state.sha256:
            part.unlink(missing_ok=True)
            state.ranges = []
            with open(part, "wb") as data:
                data.truncate(state.size)
            self._save(state)
            raise InputError(
                f"Upload {upload_id} arrived corrupted (SHA-256 differs): send it again."
            )
        final = self.root / state.id / DATA / state.name
        final.parent.mkdir(exist_ok=True)
        part.replace(final)
        state.path = str(final)
        self._save(state)
        return state

    def delete(self, upload_id: str) -> None:
        """Remove the upload and its data; ConflictError (409) while a queued or running job
        reads it."""
        self.get(upload_id)
        users = self._users(upload_id)
        if users:
            raise ConflictError(
                f"Upload {upload_id} is an input of {', '.join(users)}; cancel "
                f"{'that job' if len(users) == 1 else 'those jobs'} (POST /v1/jobs/{{id}}/cancel) "
                "or wait until it has finished, then delete the upload."
            )
        shutil.rmtree(self._folder(upload_id), ignore_errors=True)
        with self._lock:
            self._gates.pop(upload_id, None)

    def _folder(self, upload_id: str) -> Path:
        if not _ID.match(upload_id):
            raise NotFoundError(f"No upload {upload_id!r}: upload ids are 32 hexadecimal digits.")
        return self.root / upload_id

    def _part(self, state: UploadState) -> Path:
        return self.root / state.id / INCOMING

    def _save(self, state: UploadState) -> None:
        meta = self.root / state.id / RECORD
        temporary = meta.with_name(RECORD + ".tmp")
        temporary.write_text(json.dumps(asdict(state)))
        temporary.replace(meta)


def check_upload_input(path: Path, uploads_root: Path, role: str) -> None:
    """Refuses (403) a job input inside an upload's folder other than its finished file: the
    bytes of an unfinished upload, the backend's records."""
    root = Path(os.path.realpath(uploads_root))
    path = Path(os.path.realpath(path))
    if not path.is_relative_to(root) or path == root:
        return
    upload_id = path.relative_to(root).parts[0]
    folder = root / upload_id
    try:
        state = UploadState(**json.loads((folder / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        state = None
    if state is not None and state.complete and Path(os.path.realpath(state.path or "")) == path:
        return
    if state is not None and not state.complete:
        raise ForbiddenPathError(
            f"The {role} {path} belongs to upload {upload_id}, which is not complete: send the "
            f"missing chunks and complete it (POST /v1/uploads/{upload_id}/complete), then use "
            "the path the completion answers."
        )
    raise ForbiddenPathError(
        f"The {role} {path} is not an uploaded file; give the path that completing the upload "
        "answered."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
