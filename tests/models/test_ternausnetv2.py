"""TernausNetV2 (WRN-38): reference names, shapes, order and test vectors; input checks."""

from __future__ import annotations

import pytest
import torch

from ternaus_backend.errors import InputError
from ternaus_backend.models.ternausnetv2 import TernausNetV2

# Vector a is well conditioned: an exact implementation reproduces it to ~1e-6.
A_TOLERANCE = 1e-5
# Vector b (signed batch-norm weights) makes conv4/conv5 activations grow ~10x per block (to ~6e5),
# so float32 rounding alone moves its logits by ~3e-3 (e.g. 1 vs 2 CPU threads; float64 lands
# 1.1e-3 away). 1e-2 still separates the |weight| + eps rule from the raw-weight rule (0.12 off).
B_TOLERANCE = 1e-2


def test_state_dict_matches_reference_manifest(reference_manifest: dict) -> None:
    with torch.device("meta"):
        model = TernausNetV2(num_classes=2, num_filters=32, in_channels=11)
    got = [(name, list(t.shape)) for name, t in model.state_dict().items()]
    want = [(name, shape) for name, shape, _dtype in reference_manifest["tensors"]]
    assert got == want
    assert len(got) == reference_manifest["num_tensors"] == 179
    params = sum(p.numel() for p in model.parameters())
    assert params == reference_manifest["num_parameters"] == 67_203_714


@pytest.fixture(scope="module")
def wrn38_models() -> dict[str, TernausNetV2]:
    """One TernausNetV2 per batch-norm implementation, shared by the vector tests."""
    return {}


@pytest.mark.parametrize("vector", ["a", "b"])
def test_reference_logits(
    vector, abn_kind, wrn38_models, reference_weights, reference_x, expected_logits
) -> None:
    if abn_kind not in wrn38_models:
        wrn38_models[abn_kind] = TernausNetV2().eval()
    model = wrn38_models[abn_kind]
    model.load_state_dict(reference_weights(vector), strict=True)
    x = reference_x.clone()
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(x, reference_x), "the network must not modify its input"
    expected = torch.from_numpy(expected_logits(vector))
    assert logits.shape == expected.shape == (1, 2, 64, 64)
    tolerance = A_TOLERANCE if vector == "a" else B_TOLERANCE
    torch.testing.assert_close(logits, expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("shape", [(1, 11, 64, 48), (1, 11, 100, 64)])
def test_size_not_multiple_of_32_is_refused(shape, pure_abn) -> None:
    model = TernausNetV2().eval()
    with pytest.raises(InputError, match="pad your images to a multiple of 32"):
        model(torch.zeros(shape))


def test_wrong_band_count_is_refused(pure_abn) -> None:
    model = TernausNetV2(in_channels=11).eval()
    with pytest.raises(InputError, match="expects 11 input bands, got 3"):
        model(torch.zeros(1, 3, 64, 64))
