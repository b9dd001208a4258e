"""Checks on output files, made before any long work starts, and OS errors in user words.

One implementation behind every front door: ``extract`` and ``train`` call
:func:`check_output` first, so a wrong name, an existing file, a folder given as a file or an
unwritable folder is refused before the network runs; :func:`os_error` turns an ``OSError``
(full disk, read-only folder, permission denied) into an :class:`~ternaus_backend.errors.InputError`
that says what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from ternaus_backend.errors import InputError

#: What writers say when the disk fills up: the OS's words, safetensors' (os error 28) and
#: torch.save's (a short write: "file write failed", "unexpected pos").
_FULL_DISK_WORDS = (
    "no space left",
    "os error 28",
    "disk quota",
    "storagefull",
    "file write failed",
    "unexpected pos",
)

#: How the refusal of an existing output says to replace it (CLI flag and API field).
OVERWRITE_HINT = 'pass --overwrite (HTTP API: "overwrite": true) to replace it'


def check_output(
    path: str | Path,
    *,
    suffix: str,
    kind: str,
    overwrite: bool,
    create_folder: bool = False,
) -> Path:
    """Refuses an output that cannot or must not be written; returns it as a ``Path``.

    ``suffix``: the one file name ending allowed (``.gpkg``, ``.safetensors``); ``kind``: what
    the file is, for messages; ``overwrite``: whether an existing file may be replaced;
    ``create_folder``: create a missing output folder instead of refusing it.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"The output {path} is a folder; give a file name inside it, e.g. "
            f"{path / ('result' + suffix)}."
        )
    if path.suffix.lower() != suffix:
        raise InputError(f"The output {path} must be a {kind}: name it *{suffix}.")
    if path.exists() and not overwrite:
        raise InputError(
            f"The output {path} already exists; {OVERWRITE_HINT}, or choose another name."
        )
    folder = path.parent
    if not folder.exists():
        if not create_folder:
            raise InputError(f"The output folder {folder} does not exist; create it first.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, folder) from exc
    elif not folder.is_dir():
        raise InputError(f"The output folder {folder} is not a folder; choose another output.")
    probe_writable(folder)
    return path


def probe_writable(folder: Path) -> None:
    """Creates and removes a file in ``folder`` (``os.access`` is wrong for root, ACLs, ...)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".ternaus-write-test-", dir=folder)
    except OSError as exc:
        raise os_error(exc, folder) from exc
    os.close(handle)
    os.unlink(name)


def os_error(exc: OSError, path: str | Path | None = None) -> InputError:
    """An ``InputError`` that says, in one line, what an ``OSError`` means for the user."""
    where = Path(path) if path is not None else (exc.filename or "the output")
    code = exc.errno
    if code == errno.ENOSPC or code == getattr(errno, "EDQUOT", None):
        message = f"The disk holding {where} is full; free some space or write to another disk."
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        message = (
            f"{where} cannot be written (permission denied or a read-only disk); choose "
            "another folder or fix its permissions."
        )
    elif code == errno.EISDIR:
        message = f"{where} is a folder; give a file name."
    elif code in (errno.ENOENT, errno.ENOTDIR):
        message = f"{where} does not exist; check the path."
    else:
        message = f"{where} cannot be read or written: {exc.strerror or exc}; check the path."
    return InputError(message, details=f"{type(exc).__name__}: {exc}")


def looks_like_full_disk(error: BaseException, folder: Path, needed_bytes: int = 0) -> bool:
    """Whether ``error``, raised while writing into ``folder``, means its disk is full: an
    ENOSPC/EDQUOT OSError, a writer's message saying so, or less free space left in
    ``folder`` than ``needed_bytes``."""
    if isinstance(error, OSError) and error.errno in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", errno.ENOSPC),
    ):
        return True
    text = str(error).lower()
    if any(word in text for word in _FULL_DISK_WORDS):
        return True
    try:
        return needed_bytes > 0 and shutil.disk_usage(folder).free < needed_bytes
    except OSError:
        return False
