"""Activated batch normalisation (batch norm + leaky ReLU) with the In-Place ABN scale rule.

The released TernausNetV2 weights were trained with In-Place ABN, whose batch-norm scale is
``|weight| + eps`` (not the raw weight), followed by leaky ReLU with slope 0.01. :class:`ABN` is a
pure PyTorch version of exactly that; :func:`make_abn` picks the compiled ``inplace_abn`` kernel
when it is installed (it saves memory in training and works on CPU and CUDA) and falls back
to :class:`ABN` otherwise, or when ``TERNAUS_PURE_ABN=1`` is set (e.g. for export or
``torch.compile``).

Both have the same parameters (``weight``, ``bias``) and buffers (``running_mean``,
``running_var``; no ``num_batches_tracked``), so their ``state_dict`` names match the reference.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.01
PURE_ABN_ENV = "TERNAUS_PURE_ABN"


class ABN(nn.Module):
    """BatchNorm2d with scale ``|weight| + eps``, then leaky ReLU (pure PyTorch, not in place).

    In training mode it uses batch statistics and updates the running statistics exactly like
    ``nn.BatchNorm2d`` (momentum update, unbiased running variance).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        slope: float = LEAKY_SLOPE,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.slope = slope
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.abs() + self.eps
        y = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            scale,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
        # batch_norm's backward does not need its output, so the activation may overwrite it.
        return F.leaky_relu(y, self.slope, inplace=True)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, slope={self.slope}"


try:  # the compiled kernel is optional
    from inplace_abn import InPlaceABN as _InPlaceABNBase
except Exception:  # ImportError, or a build against another torch failing to load
    _InPlaceABNBase = None

HAS_INPLACE_ABN = _InPlaceABNBase is not None


if _InPlaceABNBase is not None:

    class InPlaceABN(_InPlaceABNBase):
        """``inplace_abn.InPlaceABN`` with leaky ReLU(0.01) and without ``num_batches_tracked``.

        It overwrites its input: callers must not reuse the tensor they pass in (clone it first).
        """

        def __init__(
            self,
            num_features: int,
            eps: float = 1e-5,
            momentum: float = 0.1,
            slope: float = LEAKY_SLOPE,
        ) -> None:
            super().__init__(
                num_features,
                eps=eps,
                momentum=momentum,
                activation="leaky_relu",
                activation_param=slope,
            )
            # The reference has no such buffer; a None buffer is left out of the state_dict.
            self.num_batches_tracked = None

        def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
            # Skip inplace_abn's version upgrade, which would insert num_batches_tracked.
            nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)

else:
    InPlaceABN = None  # type: ignore[assignment,misc]


def use_inplace_abn() -> bool:
    """Whether :func:`make_abn` builds the compiled In-Place ABN."""
    return HAS_INPLACE_ABN and os.environ.get(PURE_ABN_ENV, "") not in ("1", "true", "yes")


def make_abn(channels: int) -> nn.Module:
    """An activated batch norm for ``channels``: In-Place ABN when available, else :class:`ABN`."""
    if use_inplace_abn():
        return InPlaceABN(channels)
    return ABN(channels)


def activated_norms(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) of every activated batch norm (ABN or In-Place ABN) in
    ``model``: what to swap for another form."""
    kinds = (ABN,) if InPlaceABN is None else (ABN, InPlaceABN)
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, kinds)
    ]


def to_pure_abn(model: nn.Module) -> int:
    """Replace every In-Place ABN of ``model`` by :class:`ABN` sharing its parameters and running
    statistics (the ``state_dict`` keys stay the same); returns how many were replaced.

    Training on a CPU uses it: the pure version is faster there and runs under bf16 autocast,
    which the compiled kernel does not support.
    """
    replaced = 0
    for parent, name, child in activated_norms(model):
        if not is_inplace(child):
            continue
        pure = ABN(child.num_features, child.eps, child.momentum, child.activation_param)
        pure.weight, pure.bias = child.weight, child.bias
        pure.running_mean, pure.running_var = child.running_mean, child.running_var
        pure.train(child.training)
        setattr(parent, name, pure)
        replaced += 1
    return replaced


def is_inplace(module: nn.Module) -> bool:
    """True when ``module`` overwrites its input (so the input must be cloned if reused)."""
    return InPlaceABN is not None and isinstance(module, InPlaceABN)
