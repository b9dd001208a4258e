"""A fine-tuned model's provenance stays small however many generations (issue 18, item 7):
``lineage`` lists at most 8 ancestors, each a few short fields, instead of the parent's whole
provenance nested (escaped) in each generation."""

from __future__ import annotations

import json

from ternaus_backend.training.config import TrainConfig
from ternaus_backend.training.dataset import TrainingSource
from ternaus_backend.training.provenance import model_provenance


def _config(tmp_path, generation: int) -> TrainConfig:
    init = tmp_path / f"gen{generation - 1}.safetensors" if generation else None
    return TrainConfig(
        sources=[TrainingSource(rgb=tmp_path / "a.tif", labels=tmp_path / "a.gpkg")],
        out=tmp_path / f"gen{generation}.safetensors",
        init=init,
        epochs=2,
        steps_per_epoch=3,
    )


def _generations(tmp_path, count: int, first: dict[str, str] | None = None) -> list[dict]:
    best = {"epoch": 2, "val_f1": 0.5, "val_loss": 0.3, "val_iou": 0.4}
    notes = ["resampled to 0.3 m: " + "a_long_scene_name.tif, " * 20]  # ~500 characters
    chain, parent = [], first
    for generation in range(count):
        prov = model_provenance(_config(tmp_path, generation + 1), [], notes, best, 2, parent)
        chain.append(prov)
        parent = prov
    return chain


def test_five_generations_of_fine_tuning_stay_under_a_few_kb(tmp_path):
    chain = _generations(tmp_path, 12)
    sizes = [len(json.dumps(p)) for p in chain]
    assert max(sizes[:5]) < 4096, sizes
    assert sizes[-1] < 4096 and sizes[-1] - sizes[-4] < 100, sizes  # bounded: 8 ancestors
    assert all("init_provenance" not in p for p in chain)
    lineage = json.loads(chain[4]["lineage"])
    assert [a["name"] for a in lineage] == [f"gen{g}.safetensors" for g in (4, 3, 2, 1)]
    assert lineage[0]["date"] == chain[3]["date"]
    assert lineage[0]["init_model"] == chain[3]["init_model"]
    assert set(lineage[0]) == {"name", "date", "trained_by", "init_model", "datasets"}
    assert len(json.loads(chain[-1]["lineage"])) == 8


def test_a_parent_with_the_old_nested_provenance_becomes_a_flat_lineage(tmp_path):
    old = {"trained_by": "ternaus train", "date": "2024-01-01", "init_model": "none"}
    for generation in range(1, 6):  # the old format: each parent escaped inside its child
        old = {
            "trained_by": "ternaus train",
            "date": f"2024-0{generation + 1}-01",
            "init_model": f"/m/old{generation - 1}.safetensors",
            "datasets": "[]",
            "init_provenance": json.dumps(old),
        }
    assert len(json.dumps(old)) > 1000
    child = model_provenance(_config(tmp_path, 1), [], [], None, 1, old)
    lineage = json.loads(child["lineage"])
    assert [a["name"] for a in lineage] == [
        "gen0.safetensors", "old4.safetensors", "old3.safetensors", "old2.safetensors",
        "old1.safetensors", "old0.safetensors",
    ]  # fmt: skip
    assert "init_provenance" not in child and len(json.dumps(child)) < 2048
