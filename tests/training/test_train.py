"""Short real training runs on a tiny synthetic scene (CPU, light encoder, 64 px crops)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from ternaus_backend.errors import CancelledError, InputError
from ternaus_backend.models import create_model, load_model, save_model, spacenet2_metadata
from ternaus_backend.pipeline.extract import extract
from ternaus_backend.progress import CancelToken, ProgressEvent
from ternaus_backend.synthetic import make_scene
from ternaus_backend.training import steps as steps_module
from ternaus_backend.training.command import add_train_parser, run_train
from ternaus_backend.training.dataset import TrainingSource
from ternaus_backend.training.finetune import build_model, first_conv
from ternaus_backend.training.loop import TrainConfig, checkpoint_path, train, unvalidated_path
from ternaus_backend.training.steps import WarmupCosine, training_autocast_dtype

TINY = dict(steps_per_epoch=4, batch_size=4, crop_px=64, lr=3e-3, device="cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    return make_scene(tmp_path_factory.mktemp("scene"), seed=11, size_px=128, with_ms=False)


def _config(scene, out: Path, **overrides) -> TrainConfig:
    fields = dict(TINY, epochs=2)
    fields.update(overrides)
    return TrainConfig(
        sources=[TrainingSource(rgb=scene.rgb, labels=scene.labels)], out=out, **fields
    )


class Recorder:
    """Progress callback that records events and may cancel after ``cancel_at`` steps."""

    def __init__(self, cancel: CancelToken | None = None, cancel_at: int | None = None) -> None:
        self.events: list[ProgressEvent] = []
        self.cancel, self.cancel_at = cancel, cancel_at

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)
        if self.cancel and event.stage == "train" and event.done >= (self.cancel_at or 0):
            self.cancel.cancel()

    def steps(self) -> list[ProgressEvent]:
        return [e for e in self.events if e.stage == "train" and e.info.get("phase") == "step"]


def test_training_lowers_the_loss_and_the_model_extracts(scene, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    rec = Recorder()
    result = train(_config(scene, out, epochs=2, steps_per_epoch=8), progress=rec)

    losses = [e.info["loss"] for e in rec.steps()]  # running mean per epoch
    assert result.status == "completed" and result.epochs_completed == 2
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    info = rec.steps()[-1].info
    assert {"epoch", "step", "loss", "eta_s", "crops_per_s"} <= set(info)
    validated = [e.info for e in rec.events if e.info.get("phase") == "validated"]
    assert len(validated) == 2 and all("val_f1" in v and "val_iou" in v for v in validated)
    # Steps of epoch 2 repeat epoch 1's validation, for clients that poll the latest report.
    second = [e.info for e in rec.steps() if e.info["epoch"] == 2]
    assert second and all(s["last_validated"]["epoch"] == 1 for s in second)
    assert rec.steps()[0].info["last_validated"] is None
    for v in validated:  # a real F1 through the extraction pipeline, never skipped
        assert isinstance(v["val_f1"], float) and 0.0 <= v["val_f1"] <= 1.0
    assert checkpoint_path(out).exists()

    model = load_model(out)
    meta = model.metadata
    assert meta.encoder == "resnet_light" and meta.in_channels == 3
    assert meta.band_names == ["red", "green", "blue"]
    assert meta.resolution_m == pytest.approx(0.5)
    assert 0.0 <= float(meta.provenance["val_f1"]) <= 1.0
    assert str(scene.rgb) in meta.provenance["datasets"]
    assert meta.provenance["best_epoch"] == str(result.best_epoch)
    extracted = extract(scene.rgb, tmp_path / "out.gpkg", model=out)
    assert extracted.path.exists()


def test_autocast_type_follows_the_device_and_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(steps_module, "cpu_has_native_bf16", lambda: True)
    assert training_autocast_dtype(cpu, amp=True) == torch.bfloat16
    assert training_autocast_dtype(cpu, amp=False) is None
    assert training_autocast_dtype(torch.device("cuda"), amp=True) == torch.float16
    monkeypatch.setattr(steps_module, "cpu_has_native_bf16", lambda: False)
    assert training_autocast_dtype(cpu, amp=True) is None  # emulated bf16 is slower


def test_bf16_training_on_a_cpu_lowers_the_loss_and_saves_the_usual_weights(
    scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(steps_module, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "bf16.safetensors"
    rec = Recorder()
    with caplog.at_level("INFO", logger=steps_module.log.name):
        train(_config(scene, out, epochs=2, steps_per_epoch=8), progress=rec)
    assert "bfloat16 autocast on cpu" in caplog.text
    losses = [e.info["loss"] for e in rec.steps()]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    model = load_model(out)  # the pure ABN's weights load into the usual network
    reference = create_model("resnet_light", in_channels=3)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())


def test_training_reads_at_the_asked_or_the_init_models_resolution(tmp_path: Path) -> None:
    fine = make_scene(tmp_path / "fine", seed=5, size_px=192, resolution_m=0.25, with_ms=False)
    sources = [TrainingSource(rgb=fine.rgb, labels=fine.labels)]
    quick = dict(TINY, steps_per_epoch=1, batch_size=2, epochs=1)
    first = tmp_path / "half.safetensors"
    result = train(TrainConfig(sources=sources, out=first, resolution_m=0.5, **quick))
    assert load_model(first).metadata.resolution_m == 0.5
    assert any("resampled to 0.5 m" in note for note in result.notes)
    # Fine-tuning keeps the init model's resolution (not the rasters' 0.25 m).
    tuned = tmp_path / "tuned.safetensors"
    train(TrainConfig(sources=sources, out=tuned, init=first, **quick))
    assert load_model(tuned).metadata.resolution_m == 0.5
    with pytest.raises(InputError, match="resolution"):
        train(
            TrainConfig(sources=sources, out=first, resume=True, resolution_m=0.3, epochs=2, **TINY)
        )


def test_scaling_is_auto_for_a_new_model_and_can_be_changed_when_fine_tuning(
    tmp_path: Path,
) -> None:
    scene = make_scene(tmp_path / "s", seed=6, size_px=160, resolution_m=0.5, with_ms=False)
    sources = [TrainingSource(rgb=scene.rgb, labels=scene.labels)]
    quick = dict(TINY, steps_per_epoch=1, batch_size=2, epochs=1)
    new = tmp_path / "new.safetensors"
    train(TrainConfig(sources=sources, out=new, **quick))
    assert load_model(new).metadata.normalization.rgb.method == "auto"
    tuned = tmp_path / "tuned.safetensors"
    train(TrainConfig(sources=sources, out=tuned, init=new, scaling="percentile", **quick))
    assert load_model(tuned).metadata.normalization.rgb.method == "percentile"
    kept = tmp_path / "kept.safetensors"
    train(TrainConfig(sources=sources, out=kept, init=tuned, **quick))
    assert load_model(kept).metadata.normalization.rgb.method == "percentile"


def test_fine_tuning_grows_resnet_light_into_resnet_light_deep(scene, tmp_path: Path) -> None:
    small = tmp_path / "small.safetensors"
    quick = dict(TINY, steps_per_epoch=1, batch_size=2, epochs=1)
    sources = [TrainingSource(rgb=scene.rgb, labels=scene.labels)]
    train(TrainConfig(sources=sources, out=small, **quick))
    deep = tmp_path / "deep.safetensors"
    result = train(
        TrainConfig(sources=sources, out=deep, init=small, encoder="resnet_light_deep", **quick)
    )
    assert any("grew resnet_light into resnet_light_deep" in note for note in result.notes)
    model = load_model(deep)
    assert model.metadata.encoder == model.encoder_name == "resnet_light_deep"
    assert len(model.conv5) == 3
    with pytest.raises(InputError, match="grow resnet_light into resnet_light_deep"):
        train(
            TrainConfig(
                sources=sources,
                out=tmp_path / "w.safetensors",
                init=small,
                encoder="wrn38",
                **quick,
            )
        )


def test_fine_tuning_an_11_band_model_on_rgb(scene, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_model("resnet_light", in_channels=11)
    init_meta = spacenet2_metadata(
        encoder="resnet_light", num_filters=net.num_filters, name="light-11"
    )
    init = save_model(net, init_meta, tmp_path / "init11.safetensors")
    original = first_conv(net)[2].weight.detach().clone()

    model, meta, notes = build_model(["red", "green", "blue"], 0.5, init=init)
    assert first_conv(model)[2].weight.shape[1] == 3
    assert torch.equal(first_conv(model)[2].weight.detach(), original[:, :3])  # RGB kept
    assert any("11 to 3 bands" in n for n in notes)
    assert meta.normalization.mean == init_meta.normalization.mean[:3]
    assert meta.encoder == "resnet_light"

    out = tmp_path / "tuned.safetensors"
    result = train(_config(scene, out, epochs=1, steps_per_epoch=2, init=init))
    tuned = load_model(result.model_path)
    assert tuned.metadata.in_channels == 3 and tuned.metadata.encoder == "resnet_light"
    assert tuned.metadata.provenance["init_model"] == str(init)
    assert "11 to 3 bands" in tuned.metadata.provenance["notes"]

    with pytest.raises(InputError, match="encoder"):
        train(_config(scene, out, init=init, encoder="wrn38", overwrite=True))


def test_cancel_before_the_first_epoch_keeps_the_current_model(scene, tmp_path: Path) -> None:
    out = tmp_path / "cancelled.safetensors"
    cancel = CancelToken()
    with pytest.raises(CancelledError) as info:
        train(_config(scene, out), progress=Recorder(cancel, cancel_at=2), cancel=cancel)
    result = info.value.result
    assert result.status == "cancelled" and result.epochs_completed == 0
    assert result.model_path == out
    assert any("unvalidated" in n for n in result.notes)
    model = load_model(out)
    assert "unvalidated" in model.metadata.provenance["notes"]


def test_cancel_before_the_first_epoch_never_overwrites_an_existing_out(
    scene, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net, meta, _ = build_model(["red", "green", "blue"], 0.5)
    out = save_model(net, meta, tmp_path / "mine.safetensors")
    before = out.read_bytes()
    cancel = CancelToken()
    with pytest.raises(CancelledError) as info:  # --init X --out X, cancelled in epoch 1
        train(
            _config(scene, out, init=out, overwrite=True),
            progress=Recorder(cancel, cancel_at=2),
            cancel=cancel,
        )
    result = info.value.result
    side = unvalidated_path(out)
    assert side == tmp_path / "mine.unvalidated.safetensors"
    assert out.read_bytes() == before  # the user's model is intact
    assert result.model_path == side and side.exists()
    assert "unvalidated" in load_model(side).metadata.provenance["notes"]
    assert any(str(side) in n and "unchanged" in n for n in result.notes)
    assert str(side) in info.value.message and "unchanged" in info.value.message


def test_resume_with_more_epochs_follows_the_new_schedule(scene, tmp_path: Path) -> None:
    out = tmp_path / "longer.safetensors"
    steps = 2
    train(_config(scene, out, epochs=1, steps_per_epoch=steps, batch_size=2))
    cancel = CancelToken()
    rec = Recorder(cancel, cancel_at=0)  # one step of the resumed run is enough
    with pytest.raises(CancelledError):
        train(
            _config(scene, out, epochs=3, steps_per_epoch=steps, batch_size=2, resume=True),
            progress=rec,
            cancel=cancel,
        )
    first = rec.steps()[0]
    assert first.done == steps + 1 and first.total == 3 * steps
    total = 3 * steps
    expected = TINY["lr"] * WarmupCosine(int(0.05 * total), total)(steps + 1)
    assert first.info["lr"] == pytest.approx(expected)  # not the old run's floor
    assert expected > 10 * TINY["lr"] * WarmupCosine(0, steps).floor


def test_cancel_then_resume_continues_from_the_checkpoint_epoch(scene, tmp_path: Path) -> None:
    out = tmp_path / "resumed.safetensors"
    cancel = CancelToken()
    steps = TINY["steps_per_epoch"]
    with pytest.raises(CancelledError) as info:  # cancelled during epoch 2
        train(
            _config(scene, out, epochs=2),
            progress=Recorder(cancel, cancel_at=steps + 2),
            cancel=cancel,
        )
    first = info.value.result
    assert first.epochs_completed == 1 and first.best_epoch == 1
    kept = out.read_bytes()
    load_model(out)

    rec = Recorder()
    result = train(_config(scene, out, epochs=2, resume=True), progress=rec)
    assert {e.info["epoch"] for e in rec.steps()} == {2}  # epoch 1 is not trained again
    assert rec.steps()[0].done == steps + 1
    assert result.epochs_completed == 2 and len(result.history) == 2
    assert any("resumed after epoch 1" in n for n in result.notes)
    if result.best_epoch == 1:
        assert out.read_bytes() == kept

    with pytest.raises(InputError, match="checkpoint"):
        train(_config(scene, tmp_path / "other.safetensors", resume=True))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ternaus")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_trains_and_reports(scene, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.safetensors"
    args = _parse(
        [
            "train",
            "--rgb",
            str(scene.rgb),
            "--labels",
            str(scene.labels),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--crop",
            "64",
            "--device",
            "cpu",
        ]
    )
    assert args.func(args) == 0
    assert "best model" in capsys.readouterr().out
    assert load_model(out).metadata.in_channels == 3

    bad = _parse(
        [
            "train",
            "--rgb",
            str(scene.rgb),
            "--rgb",
            str(scene.rgb),
            "--ms",
            str(scene.rgb),
            "--labels",
            str(scene.labels),
            "--out",
            str(out),
        ]
    )
    with pytest.raises(InputError, match="--ms"):
        run_train(bad)
    with pytest.raises(InputError, match="multiple of 32"):
        run_train(
            _parse(
                [
                    "train",
                    "--rgb",
                    str(scene.rgb),
                    "--labels",
                    str(scene.labels),
                    "--out",
                    str(out),
                    "--crop",
                    "100",
                ]
            )
        )


def test_resume_is_checked_against_the_checkpoint(scene, tmp_path: Path) -> None:
    out = tmp_path / "run.safetensors"
    small = dict(epochs=1, steps_per_epoch=1, batch_size=2)
    train(_config(scene, out, **small))
    with pytest.raises(InputError, match="already"):  # nothing left to do: not a silent exit 0
        train(_config(scene, out, resume=True, **small))
    other = make_scene(tmp_path / "other", seed=3, size_px=128, with_ms=False)
    config = _config(scene, out, resume=True, **dict(small, epochs=2))
    config.sources = [TrainingSource(rgb=other.rgb, labels=other.labels)]
    with pytest.raises(InputError, match="other training data"):
        train(config)
    out.unlink()  # the best model is gone: resuming could end without any model
    with pytest.raises(InputError, match="missing"):
        train(_config(scene, out, resume=True, **dict(small, epochs=2)))
