"""Fixtures for the model tests: the shared reference files and the deterministic test weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "reference"


def _reference_file(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"reference file {path} is not available")
    return path


@pytest.fixture(scope="session")
def reference_manifest() -> dict:
    """The reference state_dict manifest (names, shapes, dtypes in order)."""
    return json.loads(_reference_file("ternausnetv2_state_dict.json").read_text())


@pytest.fixture(scope="session")
def expected_logits() -> Callable[[str], np.ndarray]:
    """``expected_logits("a")`` / ``("b")``: the reference float32 logits (1, 2, 64, 64)."""
    return lambda vector: np.load(_reference_file(f"ternausnetv2_expected_logits_{vector}.npy"))


def deterministic_weights(manifest: dict, vector: str) -> dict[str, torch.Tensor]:
    """The README recipe: a sin formula per tensor, walked in the manifest's state_dict order."""
    weights: dict[str, torch.Tensor] = {}
    for index, (name, shape, _dtype) in enumerate(manifest["tensors"]):
        count = int(np.prod(shape))
        t = np.arange(count, dtype=np.float64)
        base = np.sin(0.37 * (t + 1) + 0.11 * index).reshape(shape)
        parent = name.split(".")[-2] if name.count(".") else ""
        if name.endswith("running_var"):
            value = 1 + 0.1 * np.abs(base)
        elif name.endswith("running_mean"):
            value = 0.05 * base
        elif len(shape) == 1 and "bn" in parent:
            if name.endswith("weight"):
                value = 1 + 0.1 * base if vector == "a" else 0.5 * base
            else:
                value = 0.02 * base
        elif len(shape) == 1:
            value = 0.02 * base
        else:
            _out, fan_in, kh, kw = shape
            value = base * np.sqrt(6.0 / (fan_in * kh * kw))
        weights[name] = torch.from_numpy(value.astype(np.float32))
    return weights


def reference_input(channels: int = 11, size: int = 64) -> torch.Tensor:
    """The README test input x[0, c, y, x] (float64 formula, cast to float32)."""
    c = np.arange(channels, dtype=np.float64)[:, None, None]
    y = np.arange(size, dtype=np.float64)[None, :, None]
    x = np.arange(size, dtype=np.float64)[None, None, :]
    value = np.sin(0.1 * x * (c + 1) + 0.07 * y) + 0.5 * np.cos(0.05 * (x + y) * (c + 2))
    return torch.from_numpy(value[None].astype(np.float32))


@pytest.fixture(scope="session")
def reference_weights(reference_manifest) -> Callable[[str], dict[str, torch.Tensor]]:
    """``reference_weights("a")``: the deterministic state_dict for vector a or b (cached)."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(vector: str) -> dict[str, torch.Tensor]:
        if vector not in cache:
            cache[vector] = deterministic_weights(reference_manifest, vector)
        return cache[vector]

    return get


@pytest.fixture(scope="session")
def reference_x() -> torch.Tensor:
    return reference_input()


def randomize_batch_norm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every batch norm signed weights and non-trivial running statistics (in place)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var") and module.running_var is not None:
                size = module.running_var.shape
                module.weight.copy_(torch.randn(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
    return model


@pytest.fixture
def random_bn() -> Callable[..., torch.nn.Module]:
    """``random_bn(model, seed=0)``: see :func:`randomize_batch_norm`."""
    return randomize_batch_norm


@pytest.fixture
def pure_abn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Networks built in this test use the pure PyTorch ABN."""
    monkeypatch.setenv("TERNAUS_PURE_ABN", "1")


@pytest.fixture(params=["pure", "inplace"])
def abn_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the pure ABN and (when installed) with In-Place ABN."""
    from ternaus_backend.models.abn import HAS_INPLACE_ABN

    if request.param == "inplace" and not HAS_INPLACE_ABN:
        pytest.skip("inplace_abn is not installed")
    monkeypatch.setenv("TERNAUS_PURE_ABN", "1" if request.param == "pure" else "0")
    return request.param
