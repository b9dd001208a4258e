"""The results of backend jobs as the plugin reads them: one dataclass per job kind with only
the fields the plugin uses, typed, and :func:`parse_result`, which turns a job's JSON into one.

Every other module reads a job's ``result`` through :func:`parse_result`, never by key. A
result that lacks a field the plugin needs (a backend older than the plugin), or holds it with
another type, raises :class:`BackendResultError`, whose message says to update the backend.
``raw`` keeps the whole JSON result (for display of what is not typed here).

The field names are the backend's (``ternaus_backend.api.results``); a test checks that each
field read here exists there. Types are written as text (``from __future__ import
annotations``) and read by :func:`_convert`, so this runs on the Python of QGIS 3.22 too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..exceptions import BackendVersionError

#: What to do when a result lacks what the plugin reads.
UPDATE_BACKEND = (
    "update the backend (Install backend… in the Ternaus dock) to this plugin's version"
)


class BackendResultError(BackendVersionError):
    """A job's result lacks a field the plugin reads, or holds it with another type."""


@dataclass(frozen=True)
class Shift:
    """How far one layer lies from the other (median over ``pairs`` matched buildings)."""

    dx_m: float
    dy_m: float
    pairs: int


@dataclass(frozen=True)
class LabelCell:
    """One proposed cell to label and what the model was unsure of there."""

    rank: int
    near_threshold: float
    flip_disagreement: float
    low_confidence_buildings: int
    buildings: int


@dataclass(frozen=True)
class Epoch:
    """One row of a training's ``history``."""

    epoch: int
    train_loss: float | None = None
    val_f1: float | None = None
    val_iou: float | None = None
    best: bool = False


@dataclass(frozen=True)
class PredictResult:
    """An extraction: the GeoPackage on the backend's machine and its buildings."""

    out: str
    buildings: int
    layer: str
    warnings: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EvaluateResult:
    """SpaceNet scores and the GeoPackage of error layers."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    iou_threshold: float
    out: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CompareResult:
    """What a map is missing, and where our buildings lie from the map's (None: no match)."""

    unmapped: int
    unseen: int
    matched: int
    offset: Shift | None
    out: str | None
    warnings: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ChangesResult:
    """What changed between two dates."""

    new: int
    demolished: int
    changed: int
    unchanged: int
    out: str | None
    warnings: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class WhereToLabelResult:
    """Cells ranked by how unsure the model is there; ``top``: the best, best first."""

    cells: int
    excluded: int
    cell_m: float
    buildings: int
    top: list[LabelCell]
    out: str | None
    warnings: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class TrainResult:
    """Where the best model is (None: no epoch was validated) and how it scored."""

    model_path: str | None
    best_epoch: int | None
    best_val_f1: float | None
    history: list[Epoch]
    calibration: dict[str, Any] | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


Result = TypeVar("Result")

#: The dataclass of each job kind's result.
RESULT_TYPES: dict[str, type] = {
    "predict": PredictResult,
    "evaluate": EvaluateResult,
    "compare": CompareResult,
    "changes": ChangesResult,
    "where_to_label": WhereToLabelResult,
    "train": TrainResult,
}
#: The dataclasses that fields may hold, by the name their annotations use.
NESTED: dict[str, type] = {"Shift": Shift, "LabelCell": LabelCell, "Epoch": Epoch}
SCALARS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


def parse_result(job: Mapping[str, Any], expected: type[Result]) -> Result:
    """The ``result`` of ``job`` (a job's JSON, e.g. from ``BackendClient.job``) as the
    dataclass ``expected`` (e.g. :class:`PredictResult`); BackendResultError when it has no
    result or lacks a field the plugin reads."""
    result = job.get("result")
    where = f"the {job.get('kind', 'job')} job's result"
    if not isinstance(result, Mapping):
        raise BackendResultError(
            f"The backend's answer has no result for job {job.get('id', '?')}: {UPDATE_BACKEND}.",
            details=str(job)[:2000],
        )
    return _parse(expected, result, where)


def _parse(cls: type[Result], data: Mapping[str, Any], where: str) -> Result:
    """``data`` as the dataclass ``cls``: each field converted by its annotation."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        if item.name == "raw":
            values["raw"] = dict(data)
        elif item.name in data:
            values[item.name] = _convert(item.type, data[item.name], f"{where}: '{item.name}'")
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise BackendResultError(
                f"The backend's answer lacks '{item.name}' ({where}): {UPDATE_BACKEND}.",
                details=f"fields present: {', '.join(sorted(data))}",
            )
    return cls(**values)


def _convert(annotation: str, value: Any, where: str) -> Any:
    """``value`` checked against ``annotation`` (text: ``int``, ``str | None``,
    ``list[LabelCell]``, ``dict[str, Any]``, a name of :data:`NESTED`)."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in kinds:
        return None
    kind = next(part for part in kinds if part != "None")
    if kind.startswith("list[") and isinstance(value, list):
        return [_convert(kind[5:-1], item, where) for item in value]
    if kind.startswith("dict[") and isinstance(value, Mapping):
        return dict(value)
    if kind in NESTED and isinstance(value, Mapping):
        return _parse(NESTED[kind], value, where)
    types = SCALARS.get(kind)
    if types and isinstance(value, types) and (kind == "bool" or not isinstance(value, bool)):
        return float(value) if kind == "float" else value
    raise BackendResultError(
        f"The backend's answer holds {where} as {type(value).__name__}, not {kind}: "
        f"{UPDATE_BACKEND}.",
        details=repr(value)[:2000],
    )
