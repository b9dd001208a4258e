"""Files sent to the backend in chunks, for clients on another machine (a remote QGIS).

An upload is created with its name, size and SHA-256; chunks are written at their byte offset (a
chunk sent twice is simply written twice, so a client retries only the chunk that failed); when
every byte has arrived and the checksum matches, the file moves to its final name and its path
can be given to a job like any path on the backend's machine. Uploads live in
``<work folder>/uploads/<id>/``, inside the folders jobs may read. Uploads last written more
than ``retention_days`` ago are removed (at startup and when a new upload starts), unless a
queued or running job names them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ternaus_backend.api.errors import ConflictError, NotFoundError
from ternaus_backend.errors import InputError

log = logging.getLogger(__name__)

#: Chunk size clients are told to use (bytes); the request body limit must allow it.
CHUNK_BYTES = 8 * 1024 * 1024
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class UploadState:
    """What the backend knows of one upload (stored as ``upload.json`` beside the data)."""

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
    ``in_use()`` returns text (the requests of unfinished jobs) whose upload ids are kept.
    """

    def __init__(
        self,
        root: Path,
        retention_days: float = 0,
        in_use: Callable[[], str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.retention_s = retention_days * 86400.0
        self._in_use = in_use or (lambda: "")
        self._lock = threading.Lock()

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
                written = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
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
        """A new, empty upload of ``size`` bytes."""
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise InputError("sha256 must be 64 hexadecimal digits (or left out).")
        free = shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free
        if size > free:
            raise InputError(
                f"The upload needs {size / 1e9:.1f} GB but the backend's work folder has "
                f"{free / 1e9:.1f} GB free: free space there or choose a smaller extent."
            )
        self.clean()
        state = UploadState(uuid.uuid4().hex, safe_name(name), size, sha256 and sha256.lower())
        folder = self.root / state.id
        folder.mkdir(parents=True)
        with open(self._part(state), "wb") as data:
            data.truncate(size)
        self._save(state)
        return state

    def get(self, upload_id: str) -> UploadState:
        """The upload's state; ``NotFoundError`` for an unknown id."""
        meta = self._folder(upload_id) / "upload.json"
        if not meta.is_file():
            raise NotFoundError(
                f"No upload {upload_id}: it finished long ago or never existed; start a new one."
            )
        return UploadState(**json.loads(meta.read_text()))

    async def write(self, upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> UploadState:
        """Write the request body streamed in ``chunks`` at ``offset``."""
        state = self.get(upload_id)
        if state.complete:
            raise ConflictError(f"Upload {upload_id} is complete; start a new one to send again.")
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
        with self._lock:
            state = self.get(upload_id)
            if end > offset:
                state.add_range(offset, end)
            self._save(state)
        return state

    def complete(self, upload_id: str) -> UploadState:
        """Check that every byte arrived and the checksum matches, then give the file its name."""
        with self._lock:
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
            final = part.with_name(state.name)
            part.replace(final)
            state.path = str(final)
            self._save(state)
            return state

    def delete(self, upload_id: str) -> None:
        """Remove the upload and its data."""
        self.get(upload_id)
        shutil.rmtree(self._folder(upload_id), ignore_errors=True)

    def _folder(self, upload_id: str) -> Path:
        if not _ID.match(upload_id):
            raise NotFoundError(f"No upload {upload_id!r}: upload ids are 32 hexadecimal digits.")
        return self.root / upload_id

    def _part(self, state: UploadState) -> Path:
        return self.root / state.id / f"{state.name}.part"

    def _save(self, state: UploadState) -> None:
        meta = self.root / state.id / "upload.json"
        temporary = meta.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state)))
        temporary.replace(meta)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
