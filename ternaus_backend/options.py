"""A job's options declared once, as a pydantic model, and what the front doors derive from it.

Each option is a field of the job's model (e.g.
:class:`~ternaus_backend.pipeline.options.ExtractOptions`): its name is the JSON name of the HTTP
API, its ``title`` the label a user sees, its ``description`` the help text, its constraints the
ranges every front door enforces, and a ``validation_alias`` of ``AliasChoices(name, short)`` a
shorter name accepted too (the historic CLI flag and API key). From that model:

- :func:`add_option_arguments` makes the CLI flags (``--short`` and ``--name-with-hyphens``),
- :func:`options_from_args` builds the model from the parsed flags (defaults stay the model's),
- the API request embeds the model itself (its JSON schema is the OpenAPI one),
- the QGIS plugin mirrors the fields in its own options class (it cannot import the backend);
  ``tests/qgis/test_extract_options.py`` checks that both declare the same options.

Fields marked :func:`internal_field` are the pipeline's own tuning (tests and benchmarks set them):
no front door offers them, and they are left out of dumps and of the JSON schema.
"""

from __future__ import annotations

import argparse
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from ternaus_backend.errors import InputError, TernausError

__all__ = [
    "SkipJsonSchema",
    "add_option_arguments",
    "cli_flags",
    "front_door_fields",
    "internal_field",
    "options_error",
    "options_from_args",
    "request_options",
]

#: Key of ``json_schema_extra`` that marks a field no front door offers.
INTERNAL = "internal"


def internal_field(default: Any, **kwargs: Any) -> Any:
    """A field of the pipeline's own (not an option of the CLI, the API or QGIS); annotate it
    ``SkipJsonSchema[...]`` so the API schema leaves it out too."""
    return Field(default, exclude=True, json_schema_extra={INTERNAL: True}, **kwargs)


def _is_internal(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(INTERNAL))


def front_door_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The options a user sets (CLI, API, QGIS): every field but the internal ones, in order."""
    return {name: info for name, info in model.model_fields.items() if not _is_internal(info)}


def short_name(name: str, info: FieldInfo) -> str | None:
    """The shorter name a field also accepts (``tile`` for ``tile_size_px``), if any."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str) and choice != name:
                return choice
    return None


def cli_flags(name: str, info: FieldInfo) -> list[str]:
    """The CLI flags of a field: the short name's (if any) first, then the full name's."""
    names = [short_name(name, info), name]
    return [f"--{n.replace('_', '-')}" for n in names if n is not None]


def _value_type(annotation: Any) -> Any:
    """The annotation without ``None`` (``int | None`` -> ``int``)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
    return annotation


def _help(info: FieldInfo) -> str:
    text = info.description or info.title or ""
    if info.default is not None and not isinstance(info.default, bool):
        text += f" (default {info.default})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_option_arguments(
    parser: argparse.ArgumentParser, model: type[BaseModel], title: str = "options"
) -> None:
    """One CLI flag per option of ``model`` (see :func:`cli_flags`), in a help group ``title``;
    a flag left out is not set, so the model's default applies. Booleans are switches,
    ``Literal`` types give choices."""
    group = parser.add_argument_group(title)
    for name, info in front_door_fields(model).items():
        value_type = _value_type(info.annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": _help(info)}
        if value_type is bool:
            kwargs["action"] = (
                argparse.BooleanOptionalAction if info.default is True else "store_true"
            )
        elif get_origin(value_type) is Literal:
            kwargs["choices"] = list(get_args(value_type))
        elif value_type in (int, float, str):
            kwargs["type"] = value_type
            kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}[value_type]
        else:
            raise TypeError(f"{model.__name__}.{name}: no CLI flag for the type {value_type}")
        group.add_argument(*cli_flags(name, info), **kwargs)


def options_from_args(model: type[BaseModel], args: argparse.Namespace) -> BaseModel:
    """The options the flags of :func:`add_option_arguments` set, as ``model`` (InputError, with
    the option's title, for a bad value)."""
    values = {name: getattr(args, name) for name in front_door_fields(model) if hasattr(args, name)}
    try:
        return model(**values)
    except ValidationError as error:
        raise InputError(options_error(error, model)) from None


def options_error(error: ValidationError, model: type[BaseModel]) -> str:
    """A one-line message for what ``model`` refused: the option's title, what it must be, the
    value given (e.g. "The batch size must be 1 or more, got 0.")."""
    problems = []
    for item in error.errors():
        loc = item.get("loc") or ()
        name = str(loc[0]) if loc else ""
        info = model.model_fields.get(name)
        what = info.title if info is not None and info.title else name.replace("_", " ")
        first_word = what.split(" ", 1)[0]  # IoU, CRS: kept as written
        what = what[:1].lower() + what[1:] if first_word[1:].islower() else what
        ctx = item.get("ctx") or {}
        kind = item.get("type", "")
        got = f", got {item['input']!r}" if "input" in item and name else ""
        if kind == "value_error":
            text = str(ctx.get("error", item["msg"]))
            problems.append(text[:1].upper() + text[1:].rstrip("."))
            continue
        if kind == "extra_forbidden":
            problems.append(
                f"Unknown option {name!r} (options: {', '.join(front_door_fields(model))})"
            )
            continue
        phrase = {
            "greater_than_equal": f"must be {ctx.get('ge')} or more",
            "greater_than": f"must be more than {ctx.get('gt')}",
            "less_than_equal": f"must be {ctx.get('le')} or less",
            "less_than": f"must be less than {ctx.get('lt')}",
            "literal_error": f"must be one of {ctx.get('expected')}",
            "string_pattern_mismatch": f"must match {ctx.get('pattern')}"
            + (f" ({info.description})" if info is not None and info.description else ""),
        }.get(kind, f"is invalid ({item['msg'][:1].lower()}{item['msg'][1:]})")
        problems.append(f"The {what} {phrase}{got}")
    return "; ".join(problems) + "."


def request_options(model: type[BaseModel], value: Any) -> Any:
    """For a ``mode="before"`` validator of a request field of type ``model``: a dict becomes
    ``model`` here, its problems a ValueError with :func:`options_error`'s message (so the request
    is refused as invalid, 422); names of internal fields are refused as unknown options."""
    if not isinstance(value, dict):
        return value
    hidden = [
        key for key in value if key in model.model_fields and _is_internal(model.model_fields[key])
    ]
    if hidden:
        raise ValueError(f"{', '.join(map(str, hidden))}: not an option of the API")
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise ValueError(options_error(error, model)) from None
    except TernausError as error:  # a model that converts its errors (ExtractOptions)
        raise ValueError(error.message) from None
