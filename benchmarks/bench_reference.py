"""`ternaus predict` against the reference-style baseline, end to end, side by side (issue 11).

Both sides get the same model file (WRN-38, 11 bands, seeded weights with the SpaceNet-2 band
layout: no released weights ship with the project, and timing does not depend on their values)
and the same synthetic scene (RGB + 8-band multispectral on one grid, at the model's 0.3 m), and
run as fresh processes, alternately, so a busy machine slows both alike. Reported: wall seconds
of each (including start-up and model loading), the speed-up, and the windows each side ran.

    python benchmarks/bench_reference.py [--size 2048] [--rounds 1] [--encoder wrn38]
                                         [--baseline-pure-abn]

``--baseline-pure-abn`` gives the baseline the pure-PyTorch batch norm too (TERNAUS_PURE_ABN=1;
by default it runs the network as loaded, with the compiled In-Place ABN as the authors' code
does), to show how much of the speed-up is the batch norm.

The baseline (benchmarks/reference_baseline.py) is a benchmark reference, not a second pipeline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_model(folder: Path, encoder: str) -> Path:
    """A seeded network saved as a model file with the SpaceNet-2 11-band metadata."""
    from ternaus_backend.models import create_model
    from ternaus_backend.models.metadata import spacenet2_metadata
    from ternaus_backend.models.model_file import save_model

    torch.manual_seed(0)
    model = create_model(encoder, in_channels=11).eval()
    meta = spacenet2_metadata(name=f"bench-{encoder}", encoder=encoder)
    if encoder != "wrn38":
        meta = meta.model_copy(update={"num_filters": model.num_filters})
    return save_model(model, meta, folder / f"{encoder}.safetensors")


def make_scene(folder: Path, side_px: int) -> tuple[Path, Path]:
    from ternaus_backend.synthetic import make_scene as draw

    scene = draw(folder, seed=side_px, size_px=side_px, resolution_m=0.3, ms_scale=1)
    return Path(scene.rgb), Path(scene.ms)


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene side in px")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each side")
    parser.add_argument("--encoder", default="wrn38")
    parser.add_argument("--baseline-pure-abn", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ternaus-ref-") as tmp:
        folder = Path(tmp)
        model = make_model(folder, args.encoder)
        rgb, ms = make_scene(folder, args.size)
        ours = [sys.executable, "-m", "ternaus_backend.cli", "predict", "--rgb", str(rgb)]
        ours += ["--ms", str(ms), "--model", str(model), "--out", str(folder / "ours.gpkg")]
        ours += ["--overwrite", "--device", "cpu"]
        reference = [sys.executable, str(HERE / "reference_baseline.py"), "--rgb", str(rgb)]
        reference += ["--ms", str(ms), "--model", str(model), "--out", str(folder / "ref.gpkg")]
        times: dict[str, list[float]] = {"ternaus predict": [], "reference baseline": []}
        for _ in range(args.rounds):
            env = dict(os.environ, TERNAUS_PURE_ABN="1") if args.baseline_pure_abn else None
            times["reference baseline"].append(timed(reference, env))
            times["ternaus predict"].append(timed(ours))
    ref = statistics.median(times["reference baseline"])
    our = statistics.median(times["ternaus predict"])
    abn = "pure-PyTorch ABN" if args.baseline_pure_abn else "ABN as loaded"
    print(
        f"{args.encoder}, 11 bands, {args.size}x{args.size} px RGB+MS, "
        f"{args.rounds} round(s), baseline: {abn}"
    )
    for name, values in times.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:20s} {statistics.median(values):8.1f} s  ({each})")
    print(f"ternaus predict is {ref / our:.2f}x the speed of the baseline (target >= 1.30x)")


if __name__ == "__main__":
    main()
