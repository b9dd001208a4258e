"""The options of one extraction, on the plugin's side: one typed class for the dock, the
Processing algorithm ``ternaus:extract_buildings`` and the request the backend gets.

:class:`ExtractionOptions` mirrors the backend's ``ternaus_backend.pipeline.options.ExtractOptions``
(the plugin does not import the backend): the same names (the JSON names of the predict request's
``options``), defaults and ranges; ``None`` means the model's or the backend's choice.
``tests/qgis/test_extract_options.py`` fails when the two differ, so an option added to the
backend is added here too, and then appears in Processing (:mod:`..processing.common` makes one
advanced parameter per field from the :class:`Option` in its metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Option:
    """How an option is offered to a user: its kind, label, help and range.

    ``kind`` is ``int``, ``float``, ``bool`` or ``choice``; a ``choice`` offers ``choices``
    (label, value) of which the first, with value ``None``, is the default.
    """

    kind: str
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[tuple[str, str | None], ...] = ()


def option(default: Any, kind: str, label: str, help: str, **spec: Any) -> Any:
    """A dataclass field of :class:`ExtractionOptions` with its :class:`Option`."""
    return field(default=default, metadata={"option": Option(kind, label, help, **spec)})


@dataclass
class ExtractionOptions:
    """The options of one extraction (``None``: the model's or the backend's choice)."""

    tile_size_px: int | None = option(
        None,
        "int",
        "Tile size (px)",
        "Window side in px, a multiple of 32; empty: sized to the raster by the backend",
        minimum=32,
    )
    overlap_px: int | None = option(
        None,
        "int",
        "Tile overlap (px)",
        "Overlap of neighbouring windows in px; empty: the model's",
        minimum=0,
    )
    batch_size: int | None = option(
        None,
        "int",
        "Batch size",
        "Windows per network call; empty: chosen for the device",
        minimum=1,
        maximum=256,
    )
    simplify_px: float = option(
        1.0, "float", "Simplify (px)", "Polygon simplification tolerance in px", minimum=0.0
    )
    regularize: bool = option(False, "bool", "Square the building corners", "Square corners")
    body_threshold: float | None = option(
        None,
        "float",
        "Building threshold",
        "Building probability above which a pixel is building; empty: the model's",
        minimum=0.01,
        maximum=0.99,
    )
    min_area_px: int | None = option(
        None,
        "int",
        "Minimum area (px)",
        "Drop buildings smaller than this many px; empty: the model's",
        minimum=0,
    )
    native_resolution: bool = option(
        False,
        "bool",
        "Read the raster at its own resolution",
        "By default a raster is resampled on the fly to the model's ground resolution when "
        "they differ by more than 5 %",
    )
    tta: bool = option(
        False,
        "bool",
        "Flip test-time augmentation (4x slower)",
        "Average the probabilities over 4 flips of each window",
    )
    device: str | None = option(
        None,
        "choice",
        "Device",
        "Where the network runs",
        choices=(("auto (GPU when present)", None), ("CPU", "cpu"), ("CUDA GPU", "cuda")),
    )
    precision: str | None = option(
        None,
        "choice",
        "Network precision",
        "auto: bf16 on a CPU with native bf16 units, else float32; bf16 or fp16 on a GPU",
        choices=(
            ("auto", None),
            ("float32", "float32"),
            ("bfloat16", "bfloat16"),
            ("float16 (GPU)", "float16"),
        ),
    )
    compile: bool | None = option(
        None,
        "bool",
        "Compile the network (long GPU runs)",
        "Wrap the network in torch.compile; unchecked: as TERNAUS_COMPILE says",
    )
    engine: str | None = option(
        None,
        "choice",
        "Engine",
        "What runs the network: torch (CPU or GPU), or on a CPU only ONNX Runtime or OpenVINO "
        "(often faster without a GPU; the network is converted once and cached)",
        choices=(
            ("default (torch)", None),
            ("torch", "torch"),
            ("ONNX Runtime (CPU)", "onnxruntime"),
            ("OpenVINO (CPU)", "openvino"),
        ),
    )

    def payload(self) -> dict[str, Any]:
        """The ``options`` of the predict request: the options that are set."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


def option_fields(options: type = ExtractionOptions) -> list[tuple[str, Any, Option]]:
    """``(name, default, Option)`` of every option of an options class, in order."""
    return [(f.name, f.default, f.metadata["option"]) for f in fields(options)]


def option_spec(name: str, options: type = ExtractionOptions) -> Option:
    """The :class:`Option` of one option (how the dock offers it)."""
    return next(spec for field_name, _default, spec in option_fields(options) if field_name == name)
