"""The distributed path against the single-process run, side by side on one scene (make bench).

    python benchmarks/bench_cluster.py [--size 4096] [--block-px 2048] [--json OUT.json]

Runs, alternately and twice each (the best counts), on one synthetic scene at the default
model's resolution: ``extract`` in this process; one Dask worker with one block (the whole scene:
the overhead of scheduling, the block files and the merge); one and two workers with blocks of
``--block-px`` (the halo's cost, and what a second worker buys). The local clusters are started
before the timing, as a real cluster's workers are already running. Prints
throughputs in scene megapixels per second and their ratios. On this 2-core machine two workers
share the two cores one worker uses with two threads: the ratio shows the overhead of blocks,
not a gain; with one GPU per worker the blocks run in parallel.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ternaus_backend.distributed.cluster import extract_on_cluster
from ternaus_backend.pipeline.extract import ExtractOptions, extract
from ternaus_backend.synthetic import make_scene

RESOLUTION = 0.2967  # the default model's: no resampling, the scene is the processing grid
ROUNDS = 2


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


@contextmanager
def running_cluster(workers: int):
    """A LocalCluster started before the timing (a real cluster's workers are already up)."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, dashboard_address=":0", silence_logs=40
    ) as cluster, Client(cluster) as client:
        yield client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block-px", type=int, default=2048)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    options = ExtractOptions(tile_size_px=512, overlap_px=64)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        scene = make_scene(folder, seed=7, size_px=args.size, resolution_m=RESOLUTION).rgb
        big = args.size * 4  # one block holds the whole scene
        with running_cluster(1) as one, running_cluster(2) as two:
            runs = {
                "single process": lambda: extract(scene, folder / "s.gpkg", options=options),
                "1 worker, one block": lambda: extract_on_cluster(
                    scene, folder / "one.gpkg", "local:1", options=options, block_px=big,
                    overwrite=True, client=one,
                ),
                f"1 worker, blocks of {args.block_px}": lambda: extract_on_cluster(
                    scene, folder / "b1.gpkg", "local:1", options=options,
                    block_px=args.block_px, overwrite=True, client=one,
                ),
                f"2 workers, blocks of {args.block_px}": lambda: extract_on_cluster(
                    scene, folder / "b2.gpkg", "local:2", options=options,
                    block_px=args.block_px, overwrite=True, client=two,
                ),
            }  # fmt: skip
            best = {name: float("inf") for name in runs}
            for _ in range(ROUNDS):
                for name, run in runs.items():
                    best[name] = min(best[name], timed(run))
    megapixels = args.size * args.size / 1e6
    base = best["single process"]
    print(f"scene {args.size} x {args.size} px, {torch.get_num_threads()} CPU threads")
    print("| run | seconds | Mpx/s | vs single process |")
    print("|---|---:|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {megapixels / seconds:.2f} | {base / seconds:.2f}x |")
    overhead = best["1 worker, one block"] / base - 1
    print(f"distributed path on one worker, one block: {100 * overhead:+.1f} % time")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "seconds": best}, indent=1))


if __name__ == "__main__":
    main()
