"""Temporary files that a killed process leaves behind are found and removed by the next one.

Normal ends, errors, Ctrl-C and SIGTERM remove a run's temporary files (context managers and the
CLI's SIGTERM handler); ``kill -9`` leaves them. So every temporary folder or file of ours
carries its process id in its name (``<prefix><pid>-<random>``), and :func:`sweep` removes the
ones whose process no longer exists. Extraction sweeps the folder it is about to use, so a
probability map of a killed run does not stay on the disk for long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["pid_alive", "scratch_dir", "scratch_name", "sweep"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def scratch_name(prefix: str) -> str:
    """``<prefix><pid>-``: the start of a temporary name that :func:`sweep` can attribute."""
    return f"{prefix}{os.getpid()}-"


@contextlib.contextmanager
def scratch_dir(prefix: str, dir: str | Path | None = None) -> Iterator[Path]:
    """A temporary folder named after this process (removed on exit), after sweeping the
    folders of dead processes with the same prefix from ``dir``."""
    sweep(prefix, dir)
    with tempfile.TemporaryDirectory(prefix=scratch_name(prefix), dir=dir) as folder:
        yield Path(folder)


def sweep(prefix: str, dir: str | Path | None = None) -> list[Path]:
    """Remove ``<prefix><pid>-*`` files and folders in ``dir`` (default: the temporary folder)
    whose process has ended; returns what was removed."""
    folder = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # another process's file we may not touch, or already gone
        removed.append(entry)
        log.info("removed %s, left by a process that no longer runs", entry)
    return removed
