"""``ternaus compare`` and ``ternaus changes`` as a user runs them: real processes, Kampala's real
buildings edited by known rules (tests/evaluation/edited_layers.py says how)."""

from __future__ import annotations

import json

import fiona
import pytest

from tests.evaluation.edited_layers import map_and_result, second_date
from tests.test_cli import ternaus


def test_compare_prints_counts_and_the_offset_and_writes_the_layers(tmp_path):
    """The result: the map moved 2.0 m east and 1.0 m north, 10 buildings deleted, 5 added."""
    case = map_and_result(tmp_path)
    out = tmp_path / "gaps.gpkg"
    argv = ["compare", "--pred", str(case.result), "--reference", str(case.reference)]
    done = ternaus(*argv, "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["unmapped"], summary["unseen"], summary["matched"]) == (5, 10, 196)
    assert summary["offset"]["dx_m"] == pytest.approx(2.0, abs=0.2)
    assert summary["offset"]["dy_m"] == pytest.approx(1.0, abs=0.2)
    assert summary["out"] == str(out)
    assert sorted(fiona.listlayers(out)) == ["offsets", "unmapped", "unseen"]
    again = ternaus(*argv, "--out", str(out))  # an existing output is kept unless told
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert ternaus(*argv, "--out", str(out), "--overwrite").returncode == 0


def test_changes_prints_the_counts(tmp_path):
    """The later date: 8 buildings removed, 6 added, 4 enlarged 40 % in width and length."""
    case = second_date(tmp_path)
    out = tmp_path / "changes.gpkg"
    done = ternaus(
        "changes", "--before", str(case.before), "--after", str(case.after), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    counts = [summary[k] for k in ("new", "demolished", "changed", "unchanged")]
    assert counts == [6, 8, 4, 194]
    assert sorted(fiona.listlayers(out)) == ["changed", "demolished", "new"]


def test_bad_input_is_one_line(tmp_path):
    case = second_date(tmp_path)
    done = ternaus("changes", "--before", str(case.before), "--after", str(tmp_path / "no.gpkg"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no.gpkg" in done.stderr
    bad = ternaus(
        "compare", "--pred", str(case.after), "--reference", str(case.before), "--iou", "2"
    )
    assert bad.returncode == 2 and "IoU threshold" in bad.stderr
