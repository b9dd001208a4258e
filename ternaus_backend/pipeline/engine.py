"""How the network runs on a device: precision, layout, batch size and tile size (issue 11).

One plan per extraction, chosen from the device and its memory unless the caller fixes a value:

- CPU: bf16 autocast where the CPU has native bf16 units (AVX512-BF16 or AMX: 1.7x faster for
  WRN-38 and the light model on a Zen 4 core, probabilities within 0.001), else float32;
  batch 1 (batching buys nothing on a CPU and costs memory),
  windows sized to the raster up to ``CPU_MAX_TILE_PX``, so a ``SEAM_GUARD_PX`` overlap (wider
  for some encoders: ``EncoderEntry.seam_guard_px``) costs little; the compiled
  In-Place ABN is swapped for the pure-PyTorch form for the run (faster in inference, and the
  shortcut needs no clone). ``precision="float32"`` keeps full precision.
- CUDA: bf16 autocast where the GPU supports it, else fp16, with batch norm kept in float32;
  channels-last; pinned host memory and non-blocking copies; batch size from free memory;
  ``compile=True`` wraps the network in ``torch.compile``.

Lower precisions change probabilities by up to ``REDUCED_PRECISION_ATOL`` (tested on CPU).

The engine (issue 20): ``torch`` (the default, and the only one on a GPU), or a CPU runtime the
network is converted to once (:mod:`.cpu_engines`): ``onnxruntime`` (float32) or ``openvino``
(bf16 under the same ``auto`` rule as torch, else float32). :func:`inference_network` then yields
the converted network, a callable of the same shape as the torch module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ternaus_backend.errors import InputError
from ternaus_backend.models import registry
from ternaus_backend.models.abn import activated_norms
from ternaus_backend.pipeline.cpu_engines import check_engine, load_engine

Precision = Literal["float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

#: Largest window side on a CPU with the default seam guard: a 960 px step plus 128 px (a wider
#: guard widens the window by as much, so the step stays 960 px).
CPU_MAX_TILE_PX = 1088
#: Largest window side on a GPU (memory then decides the batch).
CUDA_MAX_TILE_PX = 2048
#: Overlap between windows sized by the plan: with large windows a wide seam guard is cheap, and
#: 64 px left the network's border effects visible at seams (the seam test). Encoders that see
#: further set a wider one in their registry entry (``EncoderEntry.seam_guard_px``).
SEAM_GUARD_PX = registry.SEAM_GUARD_PX
#: Activation memory per window pixel of an encoder the registry does not hold.
DEFAULT_ACTIVATION_BYTES_PER_PX = 2048
MAX_CUDA_BATCH = 16
#: Largest difference of a probability between float32 and bf16/fp16 runs that tests accept.
REDUCED_PRECISION_ATOL = 0.02


@dataclass(frozen=True)
class DevicePlan:
    """How one extraction runs the network."""

    device: torch.device
    precision: Precision
    batch_size: int
    max_tile_px: int
    seam_guard_px: int
    channels_last: bool
    pin_memory: bool
    compile: bool = False
    engine: str = "torch"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """Torch's autocast type (``None`` in float32, and for the other engines, whose
        precision is their own)."""
        if self.engine != "torch":
            return None
        return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.precision)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), where oneDNN runs
    bf16 convolutions much faster than float32; elsewhere bf16 is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def choose_precision(device: torch.device, precision: str | None) -> Precision:
    """``auto``: bf16 on a CPU with native bf16 units, else float32; bf16 on a GPU that has it,
    else fp16."""
    if precision not in (None, *PRECISIONS):
        raise InputError(f"Unknown precision {precision!r}: use {', '.join(PRECISIONS)}.")
    if precision not in (None, "auto"):
        if precision == "float16" and device.type == "cpu":
            raise InputError("float16 is for GPUs; on a CPU use float32 or bfloat16.")
        return precision  # type: ignore[return-value]
    if device.type != "cuda":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def engine_precision(engine: str, device: torch.device, precision: str | None) -> Precision:
    """The precision ``engine`` runs in: torch's and OpenVINO's as :func:`choose_precision`;
    ONNX Runtime runs in float32 (``auto`` is float32, bf16 is refused)."""
    chosen = choose_precision(device, precision)
    if engine == "onnxruntime" and chosen != "float32":
        if precision in (None, "auto"):
            return "float32"
        raise InputError(
            f"The onnxruntime engine runs in float32, not {precision}: use precision auto or "
            "float32, or the openvino engine (bf16 on CPUs with bf16 units)."
        )
    return chosen


def cuda_batch_size(device: torch.device, encoder: str, tile_px: int) -> int:
    """Windows per call that fit in half of the GPU's free memory (at least 1)."""
    free, _ = torch.cuda.mem_get_info(device)
    entry = registry.encoder_entry(encoder)
    per_px = entry.activation_bytes_per_px if entry else DEFAULT_ACTIVATION_BYTES_PER_PX
    return int(max(1, min(MAX_CUDA_BATCH, (free // 2) // (per_px * tile_px * tile_px))))


def plan_device(
    device: torch.device,
    encoder: str,
    model_tile_px: int,
    batch_size: int | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    engine: str | None = None,
) -> DevicePlan:
    """The plan for ``device``; ``None`` values are chosen for the device. ``engine``: torch
    (``None``) or a CPU engine (an InputError with a GPU, or when its packages are missing)."""
    engine = check_engine(engine, device)
    cuda = device.type == "cuda"
    entry = registry.encoder_entry(encoder)
    guard = entry.seam_guard_px if entry else SEAM_GUARD_PX
    cpu_tile = CPU_MAX_TILE_PX + guard - SEAM_GUARD_PX
    max_tile = max(model_tile_px, CUDA_MAX_TILE_PX if cuda else cpu_tile)
    if batch_size is None:
        batch_size = cuda_batch_size(device, encoder, max_tile) if cuda else 1
    if compile is None:
        compile = os.environ.get("TERNAUS_COMPILE", "") in ("1", "true", "yes")
    return DevicePlan(
        device=device,
        precision=engine_precision(engine, device, precision),
        batch_size=batch_size,
        max_tile_px=max_tile,
        seam_guard_px=guard,
        channels_last=cuda,
        pin_memory=cuda,
        compile=compile and engine == "torch",
        engine=engine,
    )


class InferenceABN(nn.Module):
    """Batch norm (scale ``|weight| + eps``) and leaky ReLU in float32, even under autocast.

    Shares its parameters with the module it stands in for; used in inference only.
    """

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.eps = float(source.eps)
        self.slope = float(getattr(source, "slope", getattr(source, "activation_param", 0.0)))
        self.weight, self.bias = source.weight, source.bias
        self.register_buffer("running_mean", source.running_mean, persistent=False)
        self.register_buffer("running_var", source.running_var, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            y = F.batch_norm(
                x.float(),
                self.running_mean,
                self.running_var,
                self.weight.abs() + self.eps,
                self.bias,
                False,
                0.0,
                self.eps,
            )
            return F.leaky_relu(y, self.slope, inplace=True)


#: glibc mallopt parameters: keep freed blocks in the heap instead of returning them to the kernel.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD = 65536, 128 * 1024


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows, musl)
        return None


@contextlib.contextmanager
def reused_heap() -> Iterator[None]:
    """While open, freed activation memory stays in the heap for the next window (glibc): every
    forward pass otherwise maps its large tensors afresh and page-faults them in (a quarter of
    the CPU time went to the kernel). On exit the defaults return and the heap is trimmed."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


@contextlib.contextmanager
def inference_network(model: nn.Module, plan: DevicePlan) -> Iterator[nn.Module]:
    """``model`` ready for ``plan`` for the duration: activated batch norms swapped for
    :class:`InferenceABN` (restored on exit; parameters shared, nothing copied), channels-last
    on CUDA, ``torch.compile`` on request, freed memory reused (:func:`reused_heap`) on a CPU.
    With another engine than torch: the network converted for it
    (:func:`.cpu_engines.load_engine`, cached on disk), a callable with the module's inputs and
    outputs."""
    if plan.engine != "torch":
        converted = load_engine(model, plan.engine, plan.precision)
        with reused_heap():
            yield converted
        return
    swapped = activated_norms(model)
    for parent, name, module in swapped:
        setattr(parent, name, InferenceABN(module).to(plan.device))
    try:
        if plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
        heap = reused_heap() if plan.device.type == "cpu" else contextlib.nullcontext()
        with heap:
            yield torch.compile(model) if plan.compile else model
    finally:
        for parent, name, module in swapped:
            setattr(parent, name, module)


def autocast_for(plan: DevicePlan) -> contextlib.AbstractContextManager:
    """Mixed precision for ``plan`` (a no-op in float32)."""
    dtype = plan.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(plan.device.type, dtype=dtype)
