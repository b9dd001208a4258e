"""A disk that fills up while a model or a training checkpoint is saved (issue 18, item 11):
the project's error saying the disk is full, where to free space and where the best model so
far is, never a raw SafetensorError / RuntimeError; the earlier file is left whole.

Where this process may mount a small tmpfs (root on Linux), the disk is really full; elsewhere
the writers are made to fail with the errors they raise on a full disk (recorded from a real
one: safetensors' "os error 28", torch.save's "unexpected pos")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ternaus_backend.errors import DiskFullError
from ternaus_backend.models import model_file
from ternaus_backend.models.model_file import load_model, save_model
from ternaus_backend.models.registry import create_model, metadata_for


@pytest.fixture
def small_disk(tmp_path):
    """(folder, real): a folder on a 24 MB tmpfs when it can be mounted (real=True)."""
    folder = tmp_path / "small"
    folder.mkdir()
    real = False
    if sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(folder)], capture_output=True
        )
        real = mounted.returncode == 0
    yield folder, real
    if real:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder) -> None:
    """Writes a file until the disk is full (on a real small disk)."""
    with open(folder / "filler.bin", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def _model():
    torch.manual_seed(0)
    model = create_model("resnet_light", in_channels=3, num_filters=8)
    return model, metadata_for(model, tile_size_px=64, overlap_px=16, resolution_m=0.5)


def test_saving_a_model_on_a_full_disk_says_so_and_keeps_the_earlier_one(small_disk, monkeypatch):
    folder, real = small_disk
    model, meta = _model()
    path = save_model(model, meta, folder / "best.safetensors")
    before = path.read_bytes()
    if real:
        _fill(folder)
    else:

        def full(*args, **kwargs):
            raise model_file.SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )

        monkeypatch.setattr(model_file, "save_file", full)
    with pytest.raises(DiskFullError) as info:
        save_model(model, meta, path)
    message = info.value.message
    assert f"the disk is full: free space in {folder}" in message
    assert f"the best model so far is {path}" in message
    assert path.read_bytes() == before and load_model(path).metadata == meta
    assert (
        sorted(p.name for p in folder.iterdir())
        == sorted(["best.safetensors", "filler.bin"])[: 2 if real else 1]
    )


def test_a_checkpoint_on_a_full_disk_says_so_and_names_the_best_model(small_disk, monkeypatch):
    from ternaus_backend.progress import no_progress
    from ternaus_backend.training.config import TrainConfig
    from ternaus_backend.training.dataset import TrainingSource
    from ternaus_backend.training.run import Run

    folder, real = small_disk
    model, meta = _model()
    out = save_model(model, meta, folder / "tuned.safetensors")
    config = TrainConfig(
        sources=[TrainingSource(rgb=folder / "a.tif", labels=folder / "a.gpkg")], out=out
    )
    ckpt = folder / "tuned.ckpt"
    run = Run(config, model, meta, [], [], None, out, ckpt, no_progress, 0.0)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    if real:
        _fill(folder)
    else:

        def full(*args, **kwargs):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
            )

        monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError) as info:
        run.save_checkpoint(optimizer, scheduler, scaler)
    message = info.value.message
    assert message.startswith(f"Cannot save the training checkpoint {ckpt}: the disk is full")
    assert f"free space in {folder}; the best model so far is {out}." in message
    assert not ckpt.exists() and not [p for p in folder.iterdir() if p.name.startswith(".")]
