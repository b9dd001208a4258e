"""The plugin's settings (QgsSettings, all under ``ternaus/``), with their defaults.

One place names every key, so the dock, the tasks and the Processing algorithms read the same
values and choices persist between QGIS sessions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import QgsSettings

PREFIX = "ternaus/"

#: key -> default value (the type of the default is the type of the setting).
DEFAULTS: dict[str, Any] = {
    "backend/mode": "local",  # "local": start `ternaus serve`; "remote": url + token
    "backend/command": "",  # path of the `ternaus` executable (empty: search)
    "backend/venv": "",  # where "Install backend…" installs (empty: <profile>/ternaus/backend-venv)
    "backend/torch_index": "",  # extra pip index for torch when installing (empty: PyPI)
    "backend/url": "http://127.0.0.1:8765",
    "backend/token": "",
    "backend/same_machine": False,  # a remote backend that reads this machine's files: no uploads
    "output/folder": "",  # empty: next to the project file, else the user's documents folder
    "models/extra": "[]",  # JSON list of model files the user added
    "models/folder": "",  # where trained models go (empty: the QGIS profile's ternaus/models)
    "dock/model": "",
    "dock/threshold": 0.0,  # 0: the model's own threshold
    "dock/min_area_px": 0,  # 0: the model's own minimum area
    "dock/simplify_px": 1.0,
    "dock/regularize": False,
    "dock/tile_px": 0,  # 0: the model's tile size
    "dock/batch_size": 0,  # 0: chosen by the backend for the device
    "dock/render_resolution_m": 0.0,  # 0: web layers are drawn at the model's resolution
    "dock/device": "auto",
    "dock/engine": "",  # empty: the backend's default engine
    "dock/rgb_layer": "",
    "dock/ms_layer": "",
}


def get(key: str) -> Any:
    """The value of ``key`` (one of :data:`DEFAULTS`), converted to the default's type."""
    default = DEFAULTS[key]
    value = QgsSettings().value(PREFIX + key, default)
    if isinstance(default, bool):
        return value in (True, "true", "True", "1", 1)
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            return default
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            return default
    return "" if value is None else str(value)


def set(key: str, value: Any) -> None:  # noqa: A001 (module-level accessor)
    """Store ``value`` under ``key`` (one of :data:`DEFAULTS`)."""
    if key not in DEFAULTS:
        raise KeyError(key)
    QgsSettings().setValue(PREFIX + key, value)


def extra_models() -> list[str]:
    """Model files the user added, in the order added."""
    try:
        paths = json.loads(get("models/extra"))
    except ValueError:
        return []
    return [str(p) for p in paths if isinstance(p, str)]


def add_extra_model(path: str) -> None:
    """Remember a model file the user added (once)."""
    paths = extra_models()
    if path not in paths:
        paths.append(path)
    set("models/extra", json.dumps(paths))


def models_folder() -> Path:
    """Where models trained from QGIS are stored (the local backend lists this folder too)."""
    from qgis.core import QgsApplication

    chosen = get("models/folder")
    if chosen:
        return Path(chosen).expanduser()
    return Path(QgsApplication.qgisSettingsDirPath()) / "ternaus" / "models"
