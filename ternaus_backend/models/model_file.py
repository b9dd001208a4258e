"""Saving and loading model files.

Our format is one ``.safetensors`` file whose header carries the :class:`ModelMetadata` (key
``ternaus_metadata``), so a model file says how to build, feed and interpret its network.
:func:`load_model` also reads the authors' released TernausNetV2 checkpoint
(``torch.load(path)["model"]``, DataParallel ``module.`` keys, batch-norm keys with or without the
old ``.bn.`` segment) and plain PyTorch state_dicts, always with strict key matching.

Only tensors are ever unpickled (``weights_only=True``): a file that needs arbitrary Python objects
is refused rather than executed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import struct
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ternaus_backend.device import pick_device
from ternaus_backend.errors import DiskFullError, InputError, ModelError
from ternaus_backend.models.calibration import Calibration
from ternaus_backend.models.metadata import ModelMetadata, describe_problems, spacenet2_metadata
from ternaus_backend.models.registry import (
    ENCODERS,
    check_metadata_matches,
    create_model,
    create_model_from_metadata,
    metadata_for,
)
from ternaus_backend.outputs import looks_like_full_disk

logger = logging.getLogger(__name__)

METADATA_KEY = "ternaus_metadata"
_BN_SEGMENT = re.compile(r"^(.*)\.bn\.(weight|bias|running_mean|running_var)$")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_SHOW_KEYS = 5

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- calibration sidecar

#: Suffix of the file beside a model that holds its confidence calibration when the model file
#: itself does not (the embedded default model: rewriting its 24 MB of weights for a few numbers
#: would add another copy of them to the repository's history).
CALIBRATION_SUFFIX = ".calibration.json"


def calibration_sidecar(path: str | os.PathLike) -> Path:
    """Where the calibration of the model file ``path`` is looked for (``x.safetensors`` ->
    ``x.calibration.json``)."""
    path = Path(path)
    return path.with_name(path.stem + CALIBRATION_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_calibration_sidecar(model_path: str | os.PathLike, calibration: Calibration) -> Path:
    """Write ``calibration`` beside the model file, tied to that file's exact bytes (a model
    rewritten later, e.g. retrained or re-tuned, no longer takes it)."""
    model_path = Path(model_path)
    target = calibration_sidecar(model_path)
    body = {
        "model_file": model_path.name,
        "model_sha256": file_sha256(model_path),
        "calibration": calibration.model_dump(mode="json"),
    }
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(temporary, target)
    return target


def with_sidecar_calibration(
    meta: ModelMetadata, path: str | os.PathLike
) -> tuple[ModelMetadata, str | None]:
    """``meta`` with the calibration of the sidecar beside ``path`` when the metadata has none
    and the sidecar was written for this very file; and where the calibration comes from
    (``"metadata"``, ``"sidecar"`` or ``None``)."""
    if meta.calibration is not None:
        return meta, "metadata"
    sidecar = calibration_sidecar(path)
    if not sidecar.is_file():
        return meta, None
    try:
        body = json.loads(sidecar.read_text())
        calibration = Calibration.model_validate(body["calibration"])
        wanted = str(body["model_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning(
            "%s is not a valid calibration (%s); confidence uncalibrated", sidecar, error
        )
        return meta, None
    if file_sha256(path) != wanted:
        logger.warning(
            "%s was fitted for another version of %s; confidence uncalibrated (fit it again: "
            "benchmarks/bench_calibration.py --write)",
            sidecar,
            Path(path).name,
        )
        return meta, None
    return meta.model_copy(update={"calibration": calibration}), "sidecar"


# --------------------------------------------------------------------------- reading


def _sniff_format(path: Path) -> str:
    """``"safetensors"`` or ``"torch"`` from the first bytes; ModelError for anything else."""
    if not path.exists():
        raise ModelError(
            f"The model file {path} does not exist; check the path given as the model."
        )
    if not path.is_file():
        raise ModelError(
            f"{path} is not a model file (a folder or device); give a .safetensors or .pt file."
        )
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise ModelError(
            f"The model file {path} is empty or truncated ({size} bytes); copy or export it again."
        )
    if head[:4] == b"PK\x03\x04":  # torch.save zip format
        return "torch"
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{":
        if 8 + header_len > size:
            raise ModelError(
                f"The model file {path} is truncated (corrupt safetensors header); copy or "
                "export it again."
            )
        return "safetensors"
    if head[0] == 0x80:  # legacy torch.save: a pickle
        return "torch"
    raise ModelError(
        f"not a model file: {path}",
        details="expected a .safetensors model saved by Ternaus or a PyTorch checkpoint (.pt/.pth)",
    )


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelError(
            f"The model file {path} is corrupt; copy or export it again.", details=str(error)
        ) from error
    return tensors, header


def _extract_state_dict(obj: Any, path: Path) -> tuple[StateDict, str]:
    """The tensors of a checkpoint: ``obj["model"]``, ``obj["state_dict"]`` or ``obj`` itself."""
    source = "state_dict"
    for key, label in (("model", "authors_checkpoint"), ("state_dict", "checkpoint")):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj, source = obj[key], label
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(
            f"No network weights found in {path}; give a TernausNetV2 model file "
            "(.safetensors, or the authors' .pt).",
            details=f"loaded a {type(obj)}",
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)][:_SHOW_KEYS]
        raise ModelError(
            f"not a network state_dict: {path}", details=f"entries that are not tensors: {others}"
        )
    return tensors, source


def _read_torch(path: Path) -> tuple[StateDict, str]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelError(
            f"{path} holds Python objects besides weights; it is not loaded for safety",
            details=str(error),
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise ModelError(
            f"The model file {path} is corrupt; copy or export it again.", details=str(error)
        ) from error
    return _extract_state_dict(obj, path)


def _normalise_keys(state: StateDict) -> tuple[StateDict, dict[str, int]]:
    """Strip ``module.``, drop the old ``.bn.`` segment and ``num_batches_tracked``; float32."""
    result: StateDict = {}
    counts = {"stripped_module_prefix": 0, "renamed_bn_keys": 0, "dropped_num_batches_tracked": 0}
    for key, tensor in state.items():
        if key.startswith("module."):
            key = key[len("module.") :]
            counts["stripped_module_prefix"] += 1
        match = _BN_SEGMENT.match(key)
        if match:
            key = f"{match.group(1)}.{match.group(2)}"
            counts["renamed_bn_keys"] += 1
        if key.endswith("num_batches_tracked"):
            counts["dropped_num_batches_tracked"] += 1
            continue
        if key in result:
            raise ModelError(f"the file holds two tensors for {key!r}")
        result[key] = tensor.float() if tensor.is_floating_point() else tensor
    return result, counts


# --------------------------------------------------------------------------- checking


def _batch_norm_weights(state: StateDict) -> dict[str, torch.Tensor]:
    """The ``weight`` of every batch-norm layer (those with a ``running_var`` beside it)."""
    return {
        key: tensor
        for key, tensor in state.items()
        if key.endswith(".weight") and key[: -len("weight")] + "running_var" in state
    }


def _build_empty(meta: ModelMetadata) -> nn.Module:
    """The network of ``meta`` with unallocated (meta) tensors, filled later by assignment."""
    with torch.device("meta"):
        return create_model_from_metadata(meta)


def _mismatch(model: nn.Module, state: StateDict) -> str | None:
    """A short description of where ``state`` does not fit ``model``, or None."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} != {shape}"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != shape
    ]
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
    ):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:_SHOW_KEYS])})")
    return "; ".join(parts) or None


def _infer_metadata(state: StateDict, path: Path) -> ModelMetadata:
    """Metadata for a state_dict without a Ternaus header, found by trying every encoder."""
    first = next((t for t in state.values() if t.dim() == 4), None)
    final = state.get("final.weight")
    if first is None or final is None:
        raise ModelError(
            f"{path} does not hold a TernausNetV2-style network (no final layer); give a model "
            "made by ternaus train or the authors' checkpoint."
        )
    in_channels, num_classes, num_filters = first.shape[1], final.shape[0], final.shape[1]
    for name in ENCODERS:
        with torch.device("meta"):
            candidate = create_model(name, in_channels, num_classes, num_filters)
        if _mismatch(candidate, state) is None:
            if name == "wrn38" and in_channels == 11 and num_classes == 2:
                return spacenet2_metadata()
            return metadata_for(candidate, provenance={"source": path.name})
    raise ModelError(
        f"{path} does not match any known network ({', '.join(ENCODERS)})",
        details="if it is one, pass its metadata to load_model(..., metadata=...)",
    )


# --------------------------------------------------------------------------- public API


def read_model_file(
    path: str | os.PathLike, metadata: ModelMetadata | None = None
) -> tuple[StateDict, ModelMetadata, dict[str, Any]]:
    """The normalised state_dict, its metadata and a report, without building the network."""
    path = Path(path)
    file_format = _sniff_format(path)
    header: dict[str, str] = {}
    if file_format == "safetensors":
        raw, header = _read_safetensors(path)
        source = "safetensors"
    else:
        raw, source = _read_torch(path)
    state, counts = _normalise_keys(raw)

    if metadata is None and METADATA_KEY in header:
        try:
            metadata = ModelMetadata.from_header(header)
        except ValueError as error:  # JSON or validation error
            raise ModelError(
                f"The metadata in {path} is invalid ({describe_problems(error)}); fix those "
                "values, re-save the model with ternaus train, or give another file.",
                details=str(error),
            ) from error
    if metadata is None:
        metadata = _infer_metadata(state, path)
    metadata, calibration_from = with_sidecar_calibration(metadata, path)

    bn_weights = _batch_norm_weights(state)
    negative = {key: int((w < 0).sum()) for key, w in bn_weights.items()}
    report: dict[str, Any] = {
        "path": str(path),
        "format": file_format,
        "source": source,
        "num_tensors": len(state),
        "bn_weights": sum(w.numel() for w in bn_weights.values()),
        "negative_bn_weights": sum(negative.values()),
        "bn_layers_with_negative_weights": sum(1 for n in negative.values() if n),
        "calibration": calibration_from,
        **counts,
    }
    return state, metadata, report


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    metadata: ModelMetadata | None = None,
) -> nn.Module:
    """Load a model file into its network, in eval mode on ``device`` (``cpu``, ``cuda``, ``auto``).

    ``metadata`` overrides the file's own (needed only for foreign files that are not the authors'
    11-band model). The result has ``.metadata`` (:class:`ModelMetadata`) and ``.load_report``
    (source, format, key renames, ``negative_bn_weights``). Raises :class:`ModelError`.
    """
    target = pick_device(device)
    state, meta, report = read_model_file(path, metadata)
    try:
        model = _build_empty(meta)
    except ModelError as error:
        raise ModelError(f"{path}: {error.message}", details=error.details) from error
    check_metadata_matches(model, meta)
    problem = _mismatch(model, state)
    if problem:
        raise ModelError(
            f"the weights in {path} do not fit the {meta.encoder} network "
            f"({meta.in_channels} bands, nf={meta.num_filters}): {problem}",
            details="the file is for another network, or its metadata is wrong",
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.to(target).eval()
    model.metadata = meta
    model.load_report = report
    logger.info(
        "loaded %s (%s, %s encoder, %d bands): %d of %d batch-norm weights are negative",
        path,
        report["source"],
        meta.encoder,
        meta.in_channels,
        report["negative_bn_weights"],
        report["bn_weights"],
    )
    return model


def load_authors_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    metadata: ModelMetadata | None = None,
) -> nn.Module:
    """The authors' released TernausNetV2 (deepglobe_buildings.pt), with SpaceNet-2 metadata."""
    return load_model(path, device, metadata or spacenet2_metadata())


def save_model(model: nn.Module, metadata: ModelMetadata, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights and ``metadata`` to a ``.safetensors`` file (atomically)."""
    check_metadata_matches(model, metadata)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot save the model: folder {path.parent} does not exist")
    tensors = {
        key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()
    }
    header = {"format": "pt", **metadata.to_header()}
    # Written beside the target, then renamed: a failed save never leaves half a model behind.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(tensors, temporary, metadata=header)
        os.replace(temporary, path)
    except (OSError, SafetensorError, RuntimeError) as error:
        needed = sum(t.numel() * t.element_size() for t in tensors.values())
        if looks_like_full_disk(error, path.parent, needed):
            kept = (
                f"the best model so far is {path} (left as it was)"
                if path.exists()
                else f"no model was saved to {path}"
            )
            raise DiskFullError(
                f"Cannot save the model to {path}: the disk is full: free space in "
                f"{path.parent}; {kept}.",
                details=f"{type(error).__name__}: {error}",
            ) from error
        if not isinstance(error, OSError):
            raise
        raise InputError(f"cannot save the model to {path}", details=str(error)) from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    metadata: ModelMetadata | None = None,
) -> ModelMetadata:
    """Convert a checkpoint (e.g. the authors' ``.pt``) to our self-describing safetensors file."""
    model = load_model(source, "cpu", metadata)
    save_model(model, model.metadata, destination)
    return model.metadata


def _describe_safetensors(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and header of a safetensors file, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = dict(handle.metadata() or {})
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelError(
            f"The model file {path} is corrupt; copy or export it again.", details=str(error)
        ) from error
    return shapes, header


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """What ``ternaus info`` prints: format, source, metadata, tensor/parameter counts, size.

    Our safetensors files are described from their header alone; other files are read in full.
    """
    path = Path(path)
    shapes: dict[str, tuple[int, ...]] = {}
    meta: ModelMetadata | None = None
    if _sniff_format(path) == "safetensors":
        shapes, header = _describe_safetensors(path)
        if METADATA_KEY in header:
            try:
                meta = ModelMetadata.from_header(header)
            except ValueError as error:
                message = f"the metadata in {path} is invalid ({describe_problems(error)})"
                raise ModelError(message, details=str(error)) from error
            file_format, source = "safetensors", "safetensors"
            meta = with_sidecar_calibration(meta, path)[0]
    if meta is None:
        state, meta, report = read_model_file(path)
        shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
        file_format, source = report["format"], report["source"]
    parameters = sum(
        math.prod(shape) for key, shape in shapes.items() if not key.endswith(_BUFFER_SUFFIXES)
    )
    return {
        "path": str(path),
        "format": file_format,
        "source": source,
        "size_bytes": path.stat().st_size,
        "num_tensors": len(shapes),
        "num_parameters": parameters,
        "metadata": meta.model_dump(mode="json"),
    }
