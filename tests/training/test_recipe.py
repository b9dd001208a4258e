"""The local fine-tuning recipe: settings from the labels, self-training targets, L2-SP, adapting
without labels, and the word ``default`` for the embedded model (real network, real rasters)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from shapely.geometry import box, mapping

from ternaus_backend.errors import InputError
from ternaus_backend.models import load_model
from ternaus_backend.models.metadata import Thresholds
from ternaus_backend.pipeline.extract import DEFAULT_MODEL
from ternaus_backend.synthetic import make_scene
from ternaus_backend.training import recipe
from ternaus_backend.training.blend import blend_states
from ternaus_backend.training.command import add_train_parser, config_from_args
from ternaus_backend.training.dataset import CropDataset, TrainingSource, prepare_sources
from ternaus_backend.training.loop import TrainConfig, _starting_weights, train
from ternaus_backend.training.pseudo import (
    add_pseudo_labels,
    instance_targets,
    pixel_targets,
    probabilities,
)

TINY = dict(steps_per_epoch=3, batch_size=2, crop_px=64, device="cpu")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    # 0.3 m, the default model's resolution: nothing is resampled
    return make_scene(
        tmp_path_factory.mktemp("scene"), seed=5, size_px=192, resolution_m=0.3, with_ms=False
    )


def _area(path: Path, scene, fraction: tuple[float, float, float, float]) -> Path:
    """A GeoJSON polygon over a fraction (x0, y0, x1, y1 of the extent) of the scene."""
    import rasterio

    with rasterio.open(scene.rgb) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs.to_string()
    w, h = right - left, top - bottom
    x0, y0, x1, y1 = fraction
    poly = box(left + x0 * w, top - y1 * h, left + x1 * w, top - y0 * h)
    layer = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": crs}},
        "features": [{"type": "Feature", "properties": {}, "geometry": mapping(poly)}],
    }
    path.write_text(json.dumps(layer))
    return path


def test_steps_grow_with_the_labelled_buildings_within_bounds() -> None:
    steps = [recipe.planned_steps(n) for n in (0, 10, 50, 80, 1000)]
    assert steps == sorted(steps)
    assert steps[0] == recipe.STEPS_MIN and steps[-1] == recipe.STEPS_MAX
    assert recipe.STEPS_MIN < recipe.planned_steps(50) < recipe.STEPS_MAX


def test_the_recipe_fills_only_what_the_request_leaves_open(scene, tmp_path: Path) -> None:
    source = TrainingSource(rgb=scene.rgb, labels=scene.labels)
    local = recipe.resolve(
        TrainConfig(sources=[source], out=tmp_path / "m.safetensors", init="default"), buildings=50
    )
    assert local.init == DEFAULT_MODEL  # the word names the embedded model
    assert local.self_training and local.lr == recipe.LOCAL["lr"]
    assert local.epochs * local.steps_per_epoch >= recipe.planned_steps(50)
    assert local.l2sp_weight > 0
    own = recipe.resolve(
        TrainConfig(
            sources=[source],
            out=tmp_path / "m.safetensors",
            init="default",
            lr=1e-4,
            epochs=2,
            self_training=False,
        ),
        buildings=50,
    )
    assert (own.lr, own.epochs, own.self_training) == (1e-4, 2, False)
    scratch = recipe.resolve(TrainConfig(sources=[source], out=tmp_path / "m.safetensors"))
    assert (scratch.epochs, scratch.steps_per_epoch, scratch.lr) == (10, 100, 1e-3)
    assert not scratch.self_training
    classic = recipe.resolve(
        TrainConfig(
            sources=[source], out=tmp_path / "m.safetensors", init="default", recipe="classic"
        )
    )
    assert (classic.epochs, classic.lr, classic.self_training) == (10, 1e-3, False)


def test_self_training_needs_a_starting_model_and_no_labels_needs_self_training(
    scene, tmp_path: Path
) -> None:
    unlabelled = TrainingSource(rgb=scene.rgb)
    with pytest.raises(InputError, match="starting model"):
        recipe.resolve(
            TrainConfig(sources=[unlabelled], out=tmp_path / "m.safetensors", self_training=True)
        )
    with pytest.raises(InputError, match="No labels"):
        recipe.resolve(
            TrainConfig(
                sources=[unlabelled],
                out=tmp_path / "m.safetensors",
                init="default",
                self_training=False,
            )
        )


def test_cli_takes_the_word_default_and_leaves_the_settings_to_the_recipe(
    scene, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args_list = [
        "train",
        "--rgb",
        str(scene.rgb),
        "--init",
        "default",
        "--out",
        str(tmp_path / "m.safetensors"),
    ]
    config = config_from_args(parser.parse_args(args_list))
    assert config.init == DEFAULT_MODEL and config.recipe == "local"
    assert config.epochs is None and config.lr is None and config.sources[0].labels is None
    assert config.blend is None  # the recipe's
    blended = config_from_args(parser.parse_args([*args_list, "--blend", "0.5"]))
    assert blended.blend == 0.5
    estimate = recipe.estimate_seconds(config, buildings=50)
    assert 60 < estimate < 15 * 60  # a local fine-tune is planned to fit in minutes on a CPU


def test_pseudo_labels_are_the_teachers_buildings_with_their_touching_borders() -> None:
    """Two roofs sharing a wall, a faint blob and a small one: the targets are what extraction
    would make of them, taught like drawn labels (the gap between the roofs is a border, not
    background; a blob the extraction drops is not a building)."""
    body = np.full((40, 60), 0.05, np.float32)
    border = np.zeros_like(body)
    body[10:30, 5:25] = body[10:30, 27:47] = 0.95  # two roofs, 2 px apart
    body[10:30, 25:27] = 0.45  # the gap: the teacher is unsure of the body there
    border[10:30, 24:28] = 0.9  # ... and sure it is a touching border
    body[2:5, 52:55] = 0.9  # 9 px: below the minimum area
    body[32:38, 50:58] = 0.5  # faint: neither sure building nor sure background
    thresholds = Thresholds(body=0.5, border=0.5, min_area_px=20)
    area = np.ones(body.shape, bool)
    area[:, 58:] = False  # outside the context: never a target
    instances, border_t, building, confident = instance_targets(
        np.stack([body, border]), thresholds, 3, area
    )
    assert len(np.unique(instances[instances > 0])) == 2  # the two roofs, apart
    gap = np.s_[12:28, 25:27]
    assert border_t[gap].all() and confident[gap].all() and not building[gap].any()
    assert not building[2:5, 52:55].any() and not confident[2:5, 52:55].any()
    assert not confident[33:37, 51:57].any()
    assert confident[0, 0] and not building[0, 0] and not border_t[0, 0]
    assert building[15, 10] and confident[15, 10] and not border_t[15, 10]
    assert not confident[:, 58:].any()


def test_pixel_targets_are_the_teachers_confident_pixels() -> None:
    body = np.array([[0.9, 0.5, 0.1, 0.75]], np.float32)
    border = np.array([[0.8, 0.9, 0.9, 0.1]], np.float32)
    area = np.array([[True, True, True, False]])
    border_t, building, confident = pixel_targets(np.stack([body, border]), area)
    assert confident.tolist() == [[True, False, True, False]]
    assert building.tolist() == [[True, False, False, True]]
    assert border_t.tolist() == [[True, False, False, False]]  # a border only on a building


def test_the_recipe_self_trains_on_the_teachers_buildings(scene, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    labelled = [TrainingSource(rgb=scene.rgb, labels=scene.labels)]
    alone = [TrainingSource(rgb=scene.rgb)]
    resolve = recipe.resolve
    for sources in (labelled, alone):
        config = resolve(TrainConfig(sources=sources, out=out, init="default"))
        assert config.pseudo_targets == "buildings"
    asked = TrainConfig(sources=labelled, out=out, init="default", pseudo_targets="pixels")
    assert resolve(asked).pseudo_targets == "pixels"
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    parsed = parser.parse_args(
        ["train", "--rgb", str(scene.rgb), "--out", str(out), "--pseudo-targets", "pixels"]
    )
    assert config_from_args(parsed).pseudo_targets == "pixels"


def test_pseudo_labels_take_the_teachers_confident_answers_outside_the_labels(
    scene, tmp_path: Path
) -> None:
    teacher = load_model(DEFAULT_MODEL)
    block = _area(tmp_path / "block.geojson", scene, (0.4, 0.0, 1.0, 1.0))
    source = TrainingSource(rgb=scene.rgb, labels=scene.labels, aoi=block)
    meta = teacher.metadata
    prepared = prepare_sources(
        [source],
        meta.normalization,
        resolution_m=meta.resolution_m,
        context_px=2048,
        margin_px=64,
    )[0]
    labelled_target = prepared.target.copy()
    labelled_weight = prepared.train_weight.copy()
    assert prepared.context_mask.any()
    assert not (prepared.context_mask & (labelled_weight > 0)).any()
    assert not (prepared.context_mask & prepared.val_mask).any()

    notes = add_pseudo_labels(teacher, [prepared], torch.device("cpu"))
    prob = probabilities(teacher, prepared.image, torch.device("cpu"))
    pseudo = prepared.pseudo_mask
    assert notes and pseudo.any() and not (pseudo & ~prepared.context_mask).any()
    _, border, building, confident = instance_targets(
        prob, meta.thresholds, 3, prepared.context_mask
    )
    assert np.array_equal(pseudo, confident)
    assert np.array_equal(prepared.target[0][pseudo], building[pseudo])
    assert np.array_equal(prepared.target[1][pseudo], border[pseudo])
    assert (prepared.train_weight[pseudo] > 0).all()
    outside = ~prepared.context_mask  # the user's labels and the validation area are untouched
    assert np.array_equal(prepared.target[:, outside], labelled_target[:, outside])
    assert np.array_equal(prepared.train_weight[outside], labelled_weight[outside])

    dataset = CropDataset([prepared], 64, 200, seed=1, pseudo_share=0.5)
    rng = np.random.default_rng(0)
    drawn = [dataset._pools(rng)[0] is dataset._pseudo for _ in range(400)]
    assert 140 < sum(drawn) < 260  # about half of the crops come from self-training pixels
    pseudo_pixels = set(dataset._pseudo[0].any.tolist())
    assert pseudo_pixels == set(np.flatnonzero(pseudo & (prepared.train_weight > 0)).tolist())
    assert not pseudo_pixels & set(dataset._candidates[0].any.tolist())
    only_labels = CropDataset([prepared], 64, 10, seed=1, pseudo_share=0.0)
    assert all(only_labels._pools(rng)[0] is only_labels._candidates for _ in range(50))
    assert dataset[0]["image"].shape == (3, 64, 64)


def test_fine_tuning_with_the_local_recipe_and_l2sp(scene, tmp_path: Path) -> None:
    block = _area(tmp_path / "block.geojson", scene, (0.4, 0.0, 1.0, 1.0))
    out = tmp_path / "local.safetensors"
    config = TrainConfig(
        sources=[TrainingSource(rgb=scene.rgb, labels=scene.labels, aoi=block)],
        out=out,
        init="default",
        epochs=2,
        l2sp_weight=10.0,
        context_px=512,
        **TINY,
    )
    result = train(config)
    assert result.status == "completed" and out.exists()
    notes = " ".join(result.notes)
    assert "self-training on" in notes and "recipe local" in notes
    base, tuned = load_model(DEFAULT_MODEL).state_dict(), load_model(out).state_dict()
    moved = [
        float((tuned[k].float() - base[k].float()).abs().max())
        for k in base
        if base[k].is_floating_point() and "running" not in k
    ]
    assert max(moved) > 0  # it trained, and a strong L2-SP kept it near the start
    assert max(moved) < 0.05


def test_adapting_to_imagery_without_labels(scene, tmp_path: Path) -> None:
    out = tmp_path / "adapted.safetensors"
    config = TrainConfig(
        sources=[TrainingSource(rgb=scene.rgb)], out=out, init="default", epochs=2, **TINY
    )
    result = train(config)
    assert result.status == "completed" and result.epochs_completed == 2
    assert result.best_epoch == 2  # nothing to validate on: the last epoch is the model
    assert all(h["val_f1"] is None and h["val_loss"] is None for h in result.history)
    assert "self-training on" in " ".join(result.notes)
    assert load_model(out).metadata.resolution_m == pytest.approx(0.2967, abs=1e-3)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_norms_keep_the_starting_statistics(scene, tmp_path: Path, freeze: bool) -> None:
    out = tmp_path / "adapted.safetensors"
    config = TrainConfig(
        sources=[TrainingSource(rgb=scene.rgb)],
        out=out,
        init="default",
        epochs=1,
        freeze_norms=freeze,
        **TINY,
    )
    assert train(config).status == "completed"
    base, tuned = load_model(DEFAULT_MODEL).state_dict(), load_model(out).state_dict()

    def change(keys: list[str]) -> float:
        return max(float((tuned[k].float() - base[k].float()).abs().max()) for k in keys)

    running = [k for k in base if "running" in k]
    learnt = [k for k in base if base[k].is_floating_point() and "running" not in k]
    assert running and change(learnt) > 0  # the weights (norms' scale and shift too) learnt
    assert (change(running) == 0) == freeze


def test_an_area_without_labels_is_the_imagery_to_adapt_to(scene, tmp_path: Path) -> None:
    area = _area(tmp_path / "extent.geojson", scene, (0.0, 0.0, 0.5, 1.0))
    meta = load_model(DEFAULT_MODEL).metadata
    whole, part = prepare_sources(
        [TrainingSource(rgb=scene.rgb), TrainingSource(rgb=scene.rgb, aoi=area)],
        meta.normalization,
        resolution_m=meta.resolution_m,
        context_px=2048,
        margin_px=0,
    )
    assert whole.context_mask.all() and not whole.has_validation
    # only the left half of the scene is read, and it is all context
    assert part.context_mask.all() and not part.has_validation
    assert part.image.shape[-1] == pytest.approx(whole.image.shape[-1] / 2, abs=2)


def test_blending_averages_weights_and_keeps_counters() -> None:
    start = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.full((3,), 4.0, dtype=torch.bfloat16), "n": torch.tensor(9)}
    mixed = blend_states(start, tuned, 0.25)
    assert mixed["w"].dtype == torch.bfloat16 and torch.equal(mixed["w"].float(), torch.ones(3))
    assert int(mixed["n"]) == 9  # counters are not averaged
    assert blend_states(start, tuned, 1.0)["w"].float().eq(4.0).all()
    with pytest.raises(ValueError, match="share"):
        blend_states(start, tuned, 0.0)
    with pytest.raises(ValueError, match="shape"):
        blend_states({**start, "w": torch.zeros(2)}, tuned, 0.5)
    with pytest.raises(ValueError, match="differ"):
        blend_states({"w": torch.zeros(3)}, tuned, 0.5)


def test_the_local_recipe_blends_with_the_starting_model(scene, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    labelled = [TrainingSource(rgb=scene.rgb, labels=scene.labels)]
    local = recipe.resolve(TrainConfig(sources=labelled, out=out, init="default"), buildings=50)
    assert local.blend == recipe.LOCAL["blend"] < 1
    adapt = recipe.resolve(
        TrainConfig(sources=[TrainingSource(rgb=scene.rgb)], out=out, init="default")
    )
    assert adapt.blend == recipe.LOCAL["blend"]  # adapting too
    classic = recipe.resolve(
        TrainConfig(sources=labelled, out=out, init="default", recipe="classic")
    )
    assert classic.blend == 1.0
    own = recipe.resolve(TrainConfig(sources=labelled, out=out, init="default", blend=0.6))
    assert own.blend == 0.6


def test_the_saved_model_is_the_blend_of_the_fine_tune_and_the_start(scene, tmp_path: Path) -> None:
    """Same run twice (same seed): unblended, and blended half way; the second file holds
    exactly the average of the first and the default model."""
    block = _area(tmp_path / "block.geojson", scene, (0.4, 0.0, 1.0, 1.0))
    outs = {}
    for share in (1.0, 0.5):
        outs[share] = tmp_path / f"blend_{share}.safetensors"
        config = TrainConfig(
            sources=[TrainingSource(rgb=scene.rgb, labels=scene.labels, aoi=block)],
            out=outs[share],
            init="default",
            epochs=1,
            context_px=512,
            blend=share,
            tune_thresholds=False,
            **TINY,
        )
        result = train(config)
        assert result.status == "completed"
    assert "weights blended: 50% fine-tuned" in " ".join(result.notes)
    base = load_model(DEFAULT_MODEL).state_dict()
    tuned, blended = (load_model(outs[s]).state_dict() for s in (1.0, 0.5))
    expected = blend_states(base, tuned, 0.5)
    learnt = [k for k in base if base[k].is_floating_point() and "running" not in k]
    assert max(float((tuned[k].float() - base[k].float()).abs().max()) for k in learnt) > 0
    for key in learnt:
        assert torch.allclose(blended[key].float(), expected[key].float(), atol=1e-6), key


def test_a_resumed_run_blends_with_the_model_it_started_from(scene, tmp_path: Path) -> None:
    config = recipe.resolve(
        TrainConfig(
            sources=[TrainingSource(rgb=scene.rgb, labels=scene.labels)],
            out=tmp_path / "m.safetensors",
            init="default",
        )
    )
    elsewhere = load_model(DEFAULT_MODEL)
    with torch.no_grad():
        for p in elsewhere.parameters():
            p.add_(1.0)  # the checkpointed weights differ from the start
    start = _starting_weights(config, elsewhere, ckpt={"epoch": 1})
    base = load_model(DEFAULT_MODEL).state_dict()
    assert start is not None and all(torch.equal(start[k], base[k]) for k in base)
    assert _starting_weights(config.model_copy(update={"blend": 1.0}), elsewhere, None) is None


def test_a_stopped_fine_tune_keeps_its_best_model_blended(scene, tmp_path: Path) -> None:
    """Stopped during epoch 2: the kept model is epoch 1's weights (the checkpoint's) blended
    with the default model's, as a finished run's would be."""
    from ternaus_backend.errors import CancelledError
    from ternaus_backend.progress import CancelToken
    from ternaus_backend.training.checkpoint import checkpoint_path, load_checkpoint

    block = _area(tmp_path / "block.geojson", scene, (0.4, 0.0, 1.0, 1.0))
    out = tmp_path / "stopped.safetensors"
    config = TrainConfig(
        sources=[TrainingSource(rgb=scene.rgb, labels=scene.labels, aoi=block)],
        out=out,
        init="default",
        epochs=2,
        context_px=512,
        blend=0.5,
        **TINY,
    )
    cancel = CancelToken()

    def stop_in_epoch_two(event) -> None:
        if event.stage == "train" and event.done > TINY["steps_per_epoch"]:
            cancel.cancel()

    with pytest.raises(CancelledError) as info:
        train(config, progress=stop_in_epoch_two, cancel=cancel)
    result = info.value.result
    assert result.best_epoch == 1 and "weights blended: 50% fine-tuned" in " ".join(result.notes)
    trained = load_checkpoint(checkpoint_path(out))["model"]
    base = load_model(DEFAULT_MODEL).state_dict()
    expected = blend_states(base, {k: trained[k] for k in base}, 0.5)
    kept = load_model(out).state_dict()
    learnt = [k for k in base if base[k].is_floating_point() and "running" not in k]
    for key in learnt:
        assert torch.allclose(kept[key].float(), expected[key].float(), atol=1e-6), key
