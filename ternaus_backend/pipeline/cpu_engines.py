"""Faster CPU engines for the network: ONNX Runtime and OpenVINO (issue 20, part B).

Most users have no GPU, and on a CPU the network is most of an extraction's time. The loaded
torch model is converted once to the chosen runtime, the converted model is cached on disk, and
the engine is a callable with the prepared torch network's shape: a float32 tensor
(N, C, H, W) in, the logits (N, classes, H, W) out, exactly what the torch path returns, so
:func:`~.inference.run_network` (flip TTA too) runs it unchanged. Height and width are dynamic
(any multiple of 32), so one conversion serves every window size.

- ``onnxruntime``: ``torch.onnx.export`` (the torch.export-based exporter, which needs
  ``onnxscript``; the legacy TorchScript exporter silently mis-exports the decoder's in-place
  phase interleave) to one ``.onnx`` file, run by the CPU execution provider in float32.
- ``openvino``: ``openvino.convert_model`` of the torch module (example input, dynamic batch,
  height and width) saved as IR (``.xml`` + ``.bin``, weights kept float32), compiled for the
  CPU with the run's precision as ``INFERENCE_PRECISION_HINT``: bf16 where the CPU has bf16
  units (AMX or AVX512-BF16; the same rule as torch's ``auto``), else f32.

Both convert an *export form* of the network (:func:`export_form`, a copy; the caller's model is
untouched): each decoder block's fused upsample + 3x3 convolution becomes one 2x2 convolution
whose four output phases are interleaved with a pixel shuffle (the same arithmetic as
:func:`~ternaus_backend.models.decoder.upsample2x_conv3x3`, without its in-place writes into a
view, which neither converter handles), and each activated batch norm becomes a batch norm whose
scale ``|weight| + eps`` is a constant (OpenVINO's converter fails on the ``abs`` of a parameter).

The cache (``TERNAUS_ENGINE_CACHE``, default ``<user cache>/ternaus/engines``) is keyed by the
SHA-256 of the weights and metadata, the input bands, the engine, and the torch and runtime
versions: a fine-tuned model or an upgrade converts afresh; the converted files never change.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ternaus_backend.errors import InputError, ModelError
from ternaus_backend.models.abn import activated_norms
from ternaus_backend.models.decoder import _PHASE_TAPS, DecoderBlock
from ternaus_backend.settings import default_work_dir

log = logging.getLogger(__name__)

Engine = Literal["torch", "onnxruntime", "openvino"]
ENGINES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
#: The engines that run on the CPU only.
CPU_ENGINES: tuple[str, ...] = ("onnxruntime", "openvino")
#: The packages each engine needs (import names), and what to install (pip names).
ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnx", "onnxscript"),
    "openvino": ("openvino",),
}
PIP_NAMES = {"onnxruntime": "onnxruntime", "onnx": "onnx", "onnxscript": "onnxscript"}
CACHE_ENV = "TERNAUS_ENGINE_CACHE"
#: Bumped when the export form or the conversion changes (old cache entries are then ignored).
EXPORT_FORMAT = 1
#: Side of the example input the converters trace with (any multiple of 32 would do).
EXAMPLE_PX = 128
#: Largest window side the exported ONNX graph accepts.
MAX_SIDE_PX = 16384

#: A converted network: logits (N, classes, H, W) of a float32 (N, C, H, W) tensor.
EngineFn = Callable[[torch.Tensor], torch.Tensor]


def check_engine(engine: str | None, device: torch.device) -> str:
    """The engine name (``None``: torch); an InputError saying what to do when ``engine`` is
    unknown, asked for with a GPU, or its packages are not installed."""
    engine = engine or "torch"
    if engine not in ENGINES:
        raise InputError(f"Unknown engine {engine!r}: use {', '.join(ENGINES)}.")
    if engine == "torch":
        return engine
    if device.type != "cpu":
        raise InputError(
            f"The {engine} engine runs on the CPU only; with a GPU ({device}) use the torch "
            f"engine, or run on the CPU (device cpu) with engine {engine}."
        )
    missing = [name for name in ENGINE_PACKAGES[engine] if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"The {engine} engine needs the package(s) {', '.join(missing)}, which are not "
            f"installed: pip install {' '.join(PIP_NAMES.get(m, m) for m in missing)} "
            "(in the backend's environment), or use the torch engine."
        )
    return engine


# --------------------------------------------------------------------------- the export form


class PhaseDecoderBlock(nn.Module):
    """A :class:`DecoderBlock` for the converters: the upsample + first 3x3 convolution as one
    2x2 convolution with four output phases per channel, interleaved by a pixel shuffle."""

    def __init__(self, block: DecoderBlock) -> None:
        super().__init__()
        first, self.second = block.block[1], block.block[2]
        self.activation = first.activation
        weight = first.conv.weight.detach().float()
        out_channels, in_channels = weight.shape[:2]
        taps = torch.tensor(_PHASE_TAPS, dtype=weight.dtype)
        kernels = torch.einsum("aru,oiuv,bcv->oabirc", taps, weight, taps)
        self.phases = nn.Conv2d(in_channels, out_channels * 4, 2, padding=1)
        self.phases.weight = nn.Parameter(kernels.reshape(out_channels * 4, in_channels, 2, 2))
        bias = first.conv.bias
        bias = torch.zeros(out_channels) if bias is None else bias.detach().float()
        self.phases.bias = nn.Parameter(bias.repeat_interleave(4))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = self.phases(x)  # (n, 4 * out, h + 1, w + 1): channel o * 4 + 2 * a + b
        n, _, h1, w1 = phases.shape
        h, w = h1 - 1, w1 - 1
        phases = phases.reshape(n, self.out_channels, 4, h1, w1)
        # Output pixel (2i + a, 2j + b) is phase (a, b) at input pixel (i + a, j + b).
        parts = [phases[:, :, 2 * a + b, a : a + h, b : b + w] for a in (0, 1) for b in (0, 1)]
        stacked = torch.stack(parts, 2).reshape(n, self.out_channels * 4, h, w)
        return self.second(self.activation(F.pixel_shuffle(stacked, 2)))


class ConstantABN(nn.Module):
    """An activated batch norm (scale ``|weight| + eps``, leaky ReLU) with constant buffers."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.eps = float(source.eps)
        self.slope = float(getattr(source, "slope", getattr(source, "activation_param", 0.0)))
        for name, value in (
            ("scale", source.weight.detach().abs() + self.eps),
            ("shift", source.bias.detach()),
            ("mean", source.running_mean.detach()),
            ("var", source.running_var.detach()),
        ):
            self.register_buffer(name, value.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(x, self.mean, self.var, self.scale, self.shift, False, 0.0, self.eps)
        return F.leaky_relu(y, self.slope)


def export_form(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``model`` in the form the converters take (same outputs up to
    float rounding; ``model`` itself is not changed)."""
    from ternaus_backend.pipeline.engine import InferenceABN  # engine imports this module

    form = copy.deepcopy(model).float().cpu().eval()
    for parent in list(form.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DecoderBlock):
                setattr(parent, name, PhaseDecoderBlock(child))
            elif isinstance(child, InferenceABN):  # a model prepared for torch inference
                setattr(parent, name, ConstantABN(child))
    for parent, name, module in activated_norms(form):
        setattr(parent, name, ConstantABN(module))
    return form


# --------------------------------------------------------------------------- the cache


def cache_root() -> Path:
    """Where converted models are kept: ``TERNAUS_ENGINE_CACHE``, else beside the job folder in
    the user's cache (``.../ternaus/engines``)."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured) if configured else default_work_dir().parent / "engines"


def _runtime_version(engine: str) -> str:
    if engine == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import openvino

    return f"openvino {openvino.__version__}"


def model_key(model: nn.Module, engine: str, in_channels: int) -> str:
    """The SHA-256 (hex) of what a conversion depends on: the weights and buffers, the model's
    metadata, the input bands, the engine, the export form and the torch and runtime versions."""
    digest = hashlib.sha256()
    meta = getattr(model, "metadata", None)
    header = [
        f"format {EXPORT_FORMAT}",
        engine,
        _runtime_version(engine),
        f"torch {torch.__version__}",
        f"bands {in_channels}",
        meta.model_dump_json() if hasattr(meta, "model_dump_json") else repr(meta),
    ]
    digest.update("\n".join(header).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _in_channels(model: nn.Module) -> int:
    meta = getattr(model, "metadata", None)
    channels = getattr(meta, "in_channels", None) or getattr(model, "in_channels", None)
    if not channels:
        raise ModelError("The model does not say how many bands it takes (no metadata).")
    return int(channels)


def _example(in_channels: int) -> torch.Tensor:
    """A seeded example batch of two windows (a batch of one would fix the batch size)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, in_channels, EXAMPLE_PX, EXAMPLE_PX, generator=generator)


#: Loggers of the converters that report every step at INFO (the CLI logs INFO).
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "openvino")


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """The converters' progress lines, tracer warnings and INFO logs kept out of the run's
    output (a failure still raises, with its message)."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export_onnx(form: nn.Module, in_channels: int, folder: Path) -> None:
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=32, max=MAX_SIDE_PX),
        3: torch.export.Dim("width", min=32, max=MAX_SIDE_PX),
    }
    with _quiet_conversion():
        torch.onnx.export(
            form,
            (_example(in_channels),),
            str(folder / "model.onnx"),
            dynamo=True,
            external_data=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({**dims},),
        )


def _export_openvino(form: nn.Module, in_channels: int, folder: Path) -> None:
    import openvino

    with _quiet_conversion():
        converted = openvino.convert_model(
            form,
            example_input=_example(in_channels),
            input=[openvino.PartialShape([-1, in_channels, -1, -1])],
        )
    openvino.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)


_EXPORTERS = {"onnxruntime": _export_onnx, "openvino": _export_openvino}
_MAIN_FILE = {"onnxruntime": "model.onnx", "openvino": "model.xml"}


def converted_model(model: nn.Module, engine: str, cache: Path | None = None) -> Path:
    """The path of ``model`` converted for ``engine``: from the cache, or converted now (tens of
    seconds, once) and stored there. A conversion failure is a ModelError."""
    in_channels = _in_channels(model)
    key = model_key(model, engine, in_channels)
    root = cache or cache_root()
    folder = root / f"{engine}-{key[:24]}"
    target = folder / _MAIN_FILE[engine]
    if target.exists():
        return target
    log.info("Converting the network for %s (once; cached in %s)", engine, folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{engine}-", dir=root))
    except OSError as exc:
        raise InputError(
            f"Cannot write the converted model to {root} ({exc.strerror or exc}): set "
            f"{CACHE_ENV} to a writable folder, or use the torch engine."
        ) from exc
    try:
        _EXPORTERS[engine](export_form(model), in_channels, staging)
        try:
            os.replace(staging, folder)  # atomic; another process may have won the race
        except OSError:
            if not target.exists():
                raise
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"The network could not be converted for {engine} ({type(exc).__name__}); "
            "use the torch engine (--engine torch).",
            details=str(exc)[:4000],
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- the engines


class OnnxRuntimeEngine:
    """The network in ONNX Runtime's CPU execution provider (float32)."""

    precision = "float32"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: images})
        return torch.from_numpy(logits)


class OpenVinoEngine:
    """The network compiled by OpenVINO for the CPU, in ``precision`` (``float32`` or
    ``bfloat16``, OpenVINO's ``INFERENCE_PRECISION_HINT``)."""

    def __init__(self, path: Path, precision: str, threads: int) -> None:
        import openvino

        self.precision = precision
        hint = {"float32": "f32", "bfloat16": "bf16"}[precision]
        config = {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO keeps the compiled network beside the IR: later runs load in a quarter
            # of the time (0.15 s instead of 0.6 s here).
            "CACHE_DIR": str(path.parent / "compiled"),
        }
        self.compiled = openvino.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        result = self.request.infer({0: images})  # outputs are copies (share_outputs=False)
        return torch.from_numpy(np.asarray(result[0], dtype=np.float32))


def load_engine(
    model: nn.Module,
    engine: str,
    precision: str = "float32",
    threads: int | None = None,
    cache: Path | None = None,
) -> EngineFn:
    """``model`` converted for ``engine`` (cached) and ready to run: a callable from a float32
    (N, C, H, W) tensor to its logits, as the torch network returns them. ``threads``: the
    runtime's threads (default: torch's)."""
    engine = check_engine(engine, torch.device("cpu"))
    if engine == "torch":
        raise ValueError("load_engine converts for onnxruntime or openvino, not torch")
    path = converted_model(model, engine, cache)
    threads = threads or torch.get_num_threads()
    try:
        if engine == "onnxruntime":
            return OnnxRuntimeEngine(path, threads)
        return OpenVinoEngine(path, precision, threads)
    except Exception as exc:
        raise ModelError(
            f"The converted model in {path.parent} could not be loaded by {engine} "
            f"({type(exc).__name__}); delete that folder to convert again, or use the torch "
            "engine.",
            details=str(exc)[:4000],
        ) from exc
