"""Input files that would make GDAL reach the network: refused unless the user allows it.

GDAL opens more than local files: ``/vsicurl/http://...``, ``/vsis3/...`` and friends, URLs, and
local descriptions (a VRT, a WMS XML file) whose sources are such paths. A backend that is given
a path must not fetch from the network on its own (it may run next to private services), so every
input is checked by :func:`check_local_file` before GDAL or OGR opens it: the path itself and,
for XML descriptions, every source they name (nested local VRTs included). Set
``TERNAUS_ALLOW_NETWORK_FILES=1`` (``ternaus serve --allow-network-files``) to allow it.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from ternaus_backend.errors import InputError

#: The environment variable that allows network files.
ALLOW_NETWORK_ENV = "TERNAUS_ALLOW_NETWORK_FILES"

#: GDAL virtual file systems that reach the network (``/vsicurl_streaming/`` etc. included).
NETWORK_FILE_SYSTEMS = (
    "vsicurl",
    "vsis3",
    "vsigs",
    "vsiaz",
    "vsiadls",
    "vsioss",
    "vsiswift",
    "vsiwebhdfs",
    "vswebhdfs",
    "vsihdfs",
)
_NETWORK = re.compile(
    r"/(?:" + "|".join(NETWORK_FILE_SYSTEMS) + r")|\b(?:https?|ftps?|s3|gs|az|wms|wmts):/",
    re.IGNORECASE,
)
_SOURCE = re.compile(
    r"<(SourceFilename|SrcDataSource)\b([^>]*)>([^<]*)</\1>", re.IGNORECASE | re.DOTALL
)
_VRT_ROOT = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:VRTDataset|OGRVRTDataSource)\b", re.DOTALL
)
#: Descriptions larger than this are not read whole (GDAL's XML descriptions are small).
MAX_DESCRIPTION_BYTES = 16 * 2**20
MAX_DEPTH = 8


def network_files_allowed() -> bool:
    """Whether ``TERNAUS_ALLOW_NETWORK_FILES`` allows inputs that reach the network."""
    return os.environ.get(ALLOW_NETWORK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def network_reference(path: str | Path, _depth: int = 0, _seen: set | None = None) -> str | None:
    """The first network path or URL that opening ``path`` would reach, or None if none.

    Looks at the path itself and, when it is a local XML description (VRT, WMS, ...), at every
    source it names, following local descriptions ``MAX_DEPTH`` deep.
    """
    text = str(path)
    match = _NETWORK.search(text)
    if match:
        return text
    file = Path(text)
    seen = _seen if _seen is not None else set()
    if _depth > MAX_DEPTH or not _is_file(file):
        return None
    key = os.path.realpath(file)
    if key in seen:
        return None
    seen.add(key)
    description = _read_description(file)
    if description is None:
        return None
    for _element, attributes, value in _SOURCE.findall(description):
        source = html.unescape(value.strip())
        if _NETWORK.search(source):
            return source
        relative = re.search(r'relativeTo\w*\s*=\s*"1"', attributes) is not None
        nested = file.parent / source if relative else Path(source)
        found = network_reference(nested, _depth + 1, seen)
        if found is not None:
            return found
    if _VRT_ROOT.match(description):
        return None  # a VRT reaches files through its sources only (metadata may hold URLs)
    match = _NETWORK.search(description)  # service descriptions: WMS ServerUrl, WCS, TMS, ...
    return match.group(0) if match else None


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the system cannot look up (too long, NUL bytes)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _read_description(file: Path) -> str | None:
    """The file's text when it is an XML description, else None (binary rasters, GeoJSON)."""
    try:
        with file.open("rb") as handle:
            head = handle.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
            if not head.startswith(b"<"):
                return None
            return (head + handle.read(MAX_DESCRIPTION_BYTES)).decode("utf-8", errors="replace")
    except OSError:
        return None


def check_local_file(path: str | Path, role: str, allowed: bool | None = None) -> None:
    """Refuses (InputError) an input that would reach the network, naming what and the setting.

    ``allowed``: whether network files are allowed (None: :func:`network_files_allowed`).
    """
    if allowed is None:
        allowed = network_files_allowed()
    if allowed:
        return
    reference = network_reference(path)
    if reference is None:
        return
    where = "is" if reference == str(path) else f"reads {reference}, which is"
    raise InputError(
        f"The {role} {path} {where} on the network, and this backend does not fetch files from "
        f"the network; use a local copy, or set {ALLOW_NETWORK_ENV}=1 (ternaus serve "
        "--allow-network-files) to allow it."
    )
