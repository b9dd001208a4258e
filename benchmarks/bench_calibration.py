"""Calibrate the embedded default model's confidence and measure it on held-out areas.

The default model extracts, through the real pipeline, the three-quarter training part of each
OpenAerialMap area of ``../shared/data/hotosm_oam`` (the AOI minus its validation quarter,
``scripts/eval_real.py``'s ``training_areas``) and the held-out validation quarters
(``resources/training/<area>_val.geojson``, ``oam_areas``). Each extracted building is a true
positive when it matches a labelled building by the SpaceNet rule (IoU > 0.5, both clipped to the
area, parts under 1 m² left out). A calibration (:mod:`ternaus_backend.models.calibration`) is
fitted on the pooled training parts; the expected calibration error (ECE: 10 equal-width bins,
weighted by count) is measured on each validation quarter and pooled, before (the mean body
probability as confidence) and after.

    .venv/bin/python benchmarks/bench_calibration.py [--json build/bench_calibration.json]
        [--cache build/calibration_outcomes.json] [--write]

``--write`` stores the calibration beside the default model
(``resources/models/default.calibration.json``, read by ``load_model``; tied to the model
file's SHA-256, so a retrained or re-tuned default model ignores it until this is run again).
``--cache`` keeps the extracted buildings (features and outcomes) so fitting can be repeated
without extracting again. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.eval_real import (  # noqa: E402
    DATA,
    DEFAULT_MODEL,
    MIN_AREA_M2,
    Area,
    banepa_area,
    oam_areas,
    training_areas,
)
from ternaus_backend.models.calibration import (  # noqa: E402
    Calibration,
    expected_calibration_error,
    fit_calibration,
)
from ternaus_backend.models.model_file import load_model, write_calibration_sidecar  # noqa: E402
from ternaus_backend.training.calibration import (  # noqa: E402
    Outcomes,
    building_outcomes,
    calibration_report,
)


def oam_split(work: Path, data: Path = DATA, chips: bool = True) -> tuple[list[Area], list[Area]]:
    """The OAM areas' training parts (fit) and validation quarters (held out), same order;
    with ``chips`` also the Banepa chips' training and validation columns."""
    prefixes = ("oam-train:", "banepa_chips:") if chips else ("oam-train:",)
    fit = [a for a in training_areas(work, data) if a.name.startswith(prefixes)]
    held = oam_areas(data) + (banepa_area(work, data) if chips else [])
    return fit, held


def collect(model: Any, areas: Sequence[Area], work: Path) -> dict[str, Outcomes]:
    """The extracted buildings of each area with their outcomes."""
    found = {}
    for area in areas:
        started = time.perf_counter()
        found[area.name] = building_outcomes(
            model, area.raster, area.region, area.truth, MIN_AREA_M2, "cpu", work=work
        )
        outcomes = found[area.name]
        print(
            f"{area.name}: {len(outcomes)} buildings, {int(outcomes.true_positive.sum())} true "
            f"positives ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    return found


def _from_json(body: dict[str, list]) -> Outcomes:
    return Outcomes(
        np.asarray(body["mean_body"], dtype=np.float64),
        np.asarray(body["area_m2"], dtype=np.float64),
        np.asarray(body["true_positive"], dtype=bool),
        np.asarray(body["confidence"], dtype=np.float64),
    )


def pooled(outcomes: dict[str, Outcomes]) -> Outcomes:
    total = Outcomes()
    for item in outcomes.values():
        total = total + item
    return total


def noise_floor(confidence: np.ndarray, draws: int = 500, seed: int = 0) -> float:
    """The ECE a perfectly calibrated confidence would show on this many buildings: the mean
    ECE over ``draws`` simulated outcomes, each building a true positive with probability
    ``confidence`` (the ECE of a few dozen buildings is mostly this noise)."""
    rng = np.random.default_rng(seed)
    values = [
        expected_calibration_error(confidence, rng.random(len(confidence)) < confidence)
        for _ in range(draws)
    ]
    return float(np.mean(values)) if len(confidence) else 0.0


def measure(
    calibration: Calibration, held: dict[str, Outcomes], fit: dict[str, Outcomes]
) -> list[dict[str, Any]]:
    """ECE before/after (and its noise floor) per held-out area, pooled over the OAM quarters,
    over every held-out area, and on the fitting data."""
    oam = {k: v for k, v in held.items() if k.startswith("oam:")}
    groups = [*held.items(), ("OAM quarters, pooled", pooled(oam))]
    if len(oam) < len(held):
        groups.append(("all held-out areas, pooled", pooled(held)))
    groups.append(("training parts (fitted on)", pooled(fit)))
    rows = []
    for name, outcomes in groups:
        row = {"area": name, **calibration_report(outcomes, calibration)}
        calibrated = calibration.apply(outcomes.mean_body, outcomes.area_m2)
        row["ece_floor"] = round(noise_floor(calibrated), 4)
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| area | buildings | true positives | ECE before (mean probability) | ECE after | "
        "ECE of a perfect calibration (noise) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['area']} | {row['buildings']} | {row['true_positives']} | "
            f"{row['ece_before']:.3f} | {row['ece_after']:.3f} | {row['ece_floor']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--json", type=Path, help="write the figures and the calibration here")
    parser.add_argument("--cache", type=Path, help="extracted buildings: read if there, else kept")
    parser.add_argument("--isotonic", action="store_true", help="add the isotonic map")
    parser.add_argument(
        "--chips",
        action="store_true",
        help="also fit on the Banepa chips' training columns and measure on their validation "
        "columns (another resolution and imagery)",
    )
    parser.add_argument("--write", action="store_true", help="store beside the model file")
    args = parser.parse_args(argv)

    if args.cache is not None and args.cache.exists():
        cached = json.loads(args.cache.read_text())
        fit = {k: _from_json(v) for k, v in cached["fit"].items()}
        held = {k: _from_json(v) for k, v in cached["held"].items()}
    else:
        model = load_model(args.model)
        with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
            fit_areas, held_areas = oam_split(Path(tmp), chips=args.chips)
            if not fit_areas:
                print(f"no OAM areas under {DATA}: nothing to calibrate on", file=sys.stderr)
                return 1
            fit = collect(model, fit_areas, Path(tmp))
            held = collect(model, held_areas, Path(tmp))
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            body = {
                "fit": {k: v.to_json() for k, v in fit.items()},
                "held": {k: v.to_json() for k, v in held.items()},
            }
            args.cache.write_text(json.dumps(body))
    train = pooled(fit)
    names = ", ".join(name.replace("oam-train:", "") for name in fit)
    calibration = fit_calibration(
        train.mean_body,
        train.area_m2,
        train.true_positive,
        isotonic=args.isotonic,
        fitted_on=f"default model on the OAM training parts ({names}), bench_calibration.py",
    )
    held_all = pooled(held)
    calibrated = calibration.apply(held_all.mean_body, held_all.area_m2)
    calibration = calibration.model_copy(
        update={
            "ece_before": round(
                expected_calibration_error(held_all.mean_body, held_all.true_positive), 4
            ),
            "ece_after": round(expected_calibration_error(calibrated, held_all.true_positive), 4),
            "fitted_on": calibration.fitted_on + "; ECE on the held-out areas, pooled",
        }
    )
    rows = measure(calibration, held, fit)
    print(markdown(rows))
    print(json.dumps(calibration.model_dump(mode="json")), file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"calibration": calibration.model_dump(mode="json"), "rows": rows}, indent=1)
        )
    if args.write:
        path = write_calibration_sidecar(args.model, calibration)
        print(f"calibration written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
