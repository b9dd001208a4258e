"""Model files: our safetensors format, the authors' checkpoint, and refusing bad files."""

from __future__ import annotations

import json
import logging
import struct
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ternaus_backend.errors import InputError, ModelError
from ternaus_backend.models import (
    create_model,
    describe_model,
    load_model,
    metadata_for,
    save_model,
    spacenet2_metadata,
)
from ternaus_backend.models.metadata import ModelMetadata


class NotWeights:
    """Pickled as a reference to this test module: refused by weights_only loading."""


def _bn_segment(key: str) -> str:
    """The old checkpoint spelling: ``...bn1.weight`` -> ``...bn1.bn.weight``."""
    head, _, leaf = key.rpartition(".")
    if "bn" in head.rpartition(".")[2] and leaf in (
        "weight",
        "bias",
        "running_mean",
        "running_var",
    ):
        return f"{head}.bn.{leaf}"
    return key


def _negative_bn_weights(state: dict[str, torch.Tensor]) -> int:
    return sum(
        int((t < 0).sum())
        for k, t in state.items()
        if k.endswith(".weight") and k[: -len("weight")] + "running_var" in state
    )


@pytest.mark.parametrize("spelling", ["authors", "plain"])
def test_authors_checkpoint(
    spelling, tmp_path, reference_weights, reference_x, expected_logits, caplog
) -> None:
    weights = reference_weights("b")  # signed batch-norm weights
    if spelling == "authors":  # {"model": DataParallel keys with the old .bn. segment}
        checkpoint = {
            "model": OrderedDict((f"module.{_bn_segment(k)}", v) for k, v in weights.items()),
            "epoch": 100,
        }
    else:  # a plain state_dict
        checkpoint = OrderedDict(weights)
    path = tmp_path / "deepglobe_buildings.pt"
    torch.save(checkpoint, path)
    del checkpoint
    try:
        with caplog.at_level(logging.INFO, logger="ternaus_backend.models.model_file"):
            model = load_model(path)
    finally:
        path.unlink()

    assert not model.training
    assert model.metadata == spacenet2_metadata()
    report = model.load_report
    expected_negative = _negative_bn_weights(weights)
    assert expected_negative > 0
    assert report["negative_bn_weights"] == expected_negative
    assert f"{expected_negative} of {report['bn_weights']} batch-norm weights" in caplog.text
    if spelling == "authors":
        assert report["source"] == "authors_checkpoint"
        bn_layers = sum(k.endswith("running_var") for k in weights)
        assert (
            report["stripped_module_prefix"] == 179 and report["renamed_bn_keys"] == 4 * bn_layers
        )
    else:
        assert report["source"] == "state_dict" and report["renamed_bn_keys"] == 0

    with torch.no_grad():
        logits = model(reference_x.clone())
    expected = torch.from_numpy(expected_logits("b"))
    torch.testing.assert_close(logits, expected, atol=1e-2, rtol=0)  # see test_ternausnetv2
    assert torch.equal(model.state_dict()["conv1.conv1.weight"], weights["conv1.conv1.weight"])


@pytest.mark.parametrize(
    ("encoder", "in_channels"),
    [("resnet_light", 3), ("resnet_light", 11), ("wrn38", 3), ("wrn38", 11)],
)
def test_safetensors_round_trip(encoder, in_channels, tmp_path, random_bn) -> None:
    model = random_bn(create_model(encoder, in_channels=in_channels)).eval()
    meta = metadata_for(model, resolution_m=0.5, provenance={"trained_on": "test"})
    path = save_model(model, meta, tmp_path / "model.safetensors")
    try:
        info = describe_model(path)
        loaded = load_model(path)
    finally:
        path.unlink()
    assert info["metadata"] == meta.model_dump(mode="json")
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert loaded.metadata == meta and loaded.load_report["source"] == "safetensors"
    assert type(loaded) is type(model) and not loaded.training
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    x = torch.randn(1, in_channels, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.clone()), model(x))


@pytest.fixture
def light_file(tmp_path: Path) -> Path:
    model = create_model("resnet_light", in_channels=3)
    return save_model(model, metadata_for(model), tmp_path / "light.safetensors")


def test_metadata_override(light_file: Path) -> None:
    meta = metadata_for(create_model("resnet_light", in_channels=3), name="renamed")
    assert load_model(light_file, metadata=meta).metadata.name == "renamed"


def _expect_model_error(path: Path, match: str, **kwargs) -> ModelError:
    with pytest.raises(ModelError, match=match) as info:
        load_model(path, **kwargs)
    return info.value


def test_missing_file_and_folder(tmp_path: Path) -> None:
    _expect_model_error(tmp_path / "nope.safetensors", "does not exist")
    _expect_model_error(tmp_path, "folder")


def test_not_a_model_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _expect_model_error(empty, "empty or truncated")
    text = tmp_path / "notes.safetensors"
    text.write_text("these are not the weights you are looking for\n")
    _expect_model_error(text, "not a model file")


def test_corrupt_files(tmp_path: Path, light_file: Path) -> None:
    data = light_file.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    _expect_model_error(truncated, "corrupt")

    checkpoint = tmp_path / "truncated.pt"
    torch.save({"model": create_model("resnet_light", in_channels=3).state_dict()}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    _expect_model_error(checkpoint, "corrupt")

    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    header["__metadata__"]["ternaus_metadata"] = '{"in_channels": "many"}'
    encoded = json.dumps(header).encode()
    bad_meta = tmp_path / "bad_meta.safetensors"
    bad_meta.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + header_len :])
    _expect_model_error(bad_meta, "[Mm]etadata .* is invalid")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "object.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "extra": NotWeights()}, path)
    _expect_model_error(path, "not loaded for safety")


def test_key_mismatch_names_keys(tmp_path: Path) -> None:
    state = create_model("resnet_light", in_channels=3).state_dict()
    state.pop("dec3.block.1.conv.bias")
    state["dec3.block.9.conv.bias"] = torch.zeros(3)
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    _expect_model_error(path, "does not match any known network")
    meta = metadata_for(create_model("resnet_light", in_channels=3))
    error = _expect_model_error(path, "do not fit", metadata=meta)
    assert "dec3.block.1.conv.bias" in error.message and "dec3.block.9.conv.bias" in error.message


def test_header_for_another_network(tmp_path: Path) -> None:
    model = create_model("resnet_light", in_channels=3)
    wrong = metadata_for(create_model("resnet_light", in_channels=11))
    with pytest.raises(ModelError, match="in_channels=11"):
        save_model(model, wrong, tmp_path / "never.safetensors")
    path = tmp_path / "forged.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=wrong.to_header())
    error = _expect_model_error(path, "do not fit")
    assert "wrong shape" in error.message and "conv1.conv1.weight" in error.message


def test_save_into_missing_folder(tmp_path: Path) -> None:
    model = create_model("resnet_light", in_channels=3)
    with pytest.raises(InputError, match="does not exist"):
        save_model(model, metadata_for(model), tmp_path / "no" / "model.safetensors")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(light_file: Path) -> None:
    with pytest.raises(InputError, match="no usable GPU"):
        load_model(light_file, device="cuda")


def test_metadata_is_kept_verbatim(light_file: Path) -> None:
    assert list(light_file.parent.iterdir()) == [light_file]  # no temporary file left behind
    meta = load_model(light_file).metadata
    assert isinstance(meta, ModelMetadata) and meta.encoder == "resnet_light"
