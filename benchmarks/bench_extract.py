"""Throughput and peak memory of the network alone and of the whole extraction.

Synthetic rasters drawn at the model's ground resolution (so SIDE x SIDE px is what the network
sees) are extracted side by side in one run, each in a fresh process so its peak resident memory
is its own. "Network alone" runs all of the extraction's windows (its own size, batch and
precision: the same device plan and prepared network) through the same model with nothing else;
the two alternate (three rounds up to 4096 px, two above; best of each side), so a busy spell on
a shared machine slows both alike. The ratio of the two throughputs is the pipeline's efficiency.
Uses CUDA with mixed precision where present.

    python benchmarks/bench_extract.py [--sizes 2048 8192] [--model PATH] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPEATS = 3  # best of three for both sides: this machine's timings vary by several per cent


def load_bench_model(model_path: str | None, device: torch.device) -> torch.nn.Module:
    from ternaus_backend.pipeline.extract import resolve_model

    return resolve_model(model_path, device)


def extraction_plan(model: torch.nn.Module, rgb: Path):
    """The device plan and window grid that ``extract`` uses for ``rgb`` with default options."""
    from ternaus_backend.device import pick_device
    from ternaus_backend.pipeline.engine import plan_device
    from ternaus_backend.pipeline.extract import ExtractOptions, _windows
    from ternaus_backend.pipeline.raster import RasterInputs

    meta, opts = model.metadata, ExtractOptions()
    plan = plan_device(pick_device(), meta.encoder, meta.tile_size_px)
    with RasterInputs.open(rgb, resolution_m=meta.resolution_m) as inputs:  # extract's grid
        grid, _ = _windows(inputs.grid.height, inputs.grid.width, meta, opts, plan)
        pixels = inputs.grid.height * inputs.grid.width
    return plan, grid, pixels


def network_alone(model_path: str | None, rgb: Path) -> dict:
    """Seconds for all of the extraction's windows through the network, inputs prepared
    beforehand (same plan, prepared network and batch size)."""
    from ternaus_backend.device import pick_device
    from ternaus_backend.pipeline.engine import inference_network
    from ternaus_backend.pipeline.inference import run_network

    device = pick_device()
    model = load_bench_model(model_path, device)
    plan, grid, pixels = extraction_plan(model, rgb)
    rng = np.random.default_rng(0)
    batch = rng.standard_normal(
        (plan.batch_size, model.metadata.in_channels, grid.tile_h, grid.tile_w), dtype=np.float32
    )
    with inference_network(model, plan) as net:
        run_network(net, batch, device, plan)  # warm-up
        start = time.perf_counter()
        for _ in range(-(-grid.count // plan.batch_size)):
            run_network(net, batch, device, plan)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "windows": grid.count,
        "tile_px": grid.tile_h,
        "batch": plan.batch_size,
        "pixels": pixels,
        "device": str(device),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own memory map;
    ru_maxrss would also count the parent's size at fork, which Linux carries across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def extraction_child(model_path: str | None, rgb: Path, out: Path, repeats: int) -> dict:
    """Runs in a fresh process: one warm-up window, then the timed extraction."""
    from ternaus_backend.device import pick_device
    from ternaus_backend.pipeline.engine import inference_network
    from ternaus_backend.pipeline.extract import extract
    from ternaus_backend.pipeline.inference import run_network

    device = pick_device()
    model = load_bench_model(model_path, device)
    plan, grid, _ = extraction_plan(model, rgb)
    tile = np.zeros((1, model.metadata.in_channels, grid.tile_h, grid.tile_w), np.float32)
    with inference_network(model, plan) as net:
        run_network(net, tile, device, plan)  # warm-up, as network_alone has
    result = min((extract(rgb, out, model=model) for _ in range(repeats)), key=lambda r: r.seconds)
    return {
        "seconds": result.seconds,
        "buildings": result.count,
        "area_km2": result.area_km2,
        "pixels": result.width_px * result.height_px,
        "stages": result.stages,
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
    }


class PixelModel(torch.nn.Module):
    """A 1x1-convolution stand-in network for measuring the pipeline's own memory on huge rasters
    (the real networks would take hours there on a CPU); it carries the default model's metadata."""

    def __init__(self, metadata) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(metadata.in_channels, 2, 1)
        with torch.no_grad():  # body: bright pixels; touching borders: none
            self.conv.weight.zero_()
            self.conv.weight[0] = 1.5
            self.conv.bias.copy_(torch.tensor([-2.0, -5.0]))
        self.metadata = metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def tile_raster(source: Path, out: Path, side_px: int) -> Path:
    """A side_px x side_px GeoTIFF made by repeating ``source``, written block by block."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        block = src.read()
        profile = src.profile | {
            "width": side_px,
            "height": side_px,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
        }
    h, w = block.shape[1:]
    with rasterio.open(out, "w", **profile) as dst:
        for row in range(0, side_px, h):
            for col in range(0, side_px, w):
                win = Window(col, row, min(w, side_px - col), min(h, side_px - row))
                dst.write(block[:, : int(win.height), : int(win.width)], window=win)
    return out


def huge_child(rgb: Path, out: Path) -> dict:
    """Extraction of a huge raster with the stand-in network: the pipeline's peak memory."""
    from ternaus_backend.device import pick_device
    from ternaus_backend.pipeline.extract import extract, resolve_model

    model = PixelModel(resolve_model(None, pick_device()).metadata)
    result = extract(rgb, out, model=model)
    return {
        "seconds": result.seconds,
        "buildings": result.count,
        "peak_rss_mb": peak_rss_mb(),
        "pixels": result.width_px * result.height_px,
    }


def make_raster(folder: Path, size_px: int, seed: int, resolution_m: float = 0.5) -> Path:
    from ternaus_backend.synthetic import make_scene

    scene = make_scene(
        folder,
        seed=seed,
        size_px=size_px,
        resolution_m=resolution_m,
        with_ms=False,
        name=f"bench{size_px}",
    )
    return Path(scene.rgb)


def model_resolution(model_path: str | None) -> float:
    from ternaus_backend.pipeline.extract import model_metadata

    return model_metadata(model_path).resolution_m


def scene_raster(folder: Path, side: int, resolution_m: float) -> Path:
    """A SIDE x SIDE scene: drawn directly up to 2048 px, larger ones tiled from a 2048 px one."""
    if side <= 2048:
        return make_raster(folder, side, seed=side, resolution_m=resolution_m)
    source = make_raster(folder, 2048, seed=2048, resolution_m=resolution_m)
    return tile_raster(source, folder / f"tiled{side}.tif", side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[2048, 8192],
        help="raster sides in px, at the model's resolution (memory ratio: last / first)",
    )
    parser.add_argument("--model", help="model file (default: the embedded default model)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--huge",
        type=int,
        metavar="SIDE",
        help="instead: pipeline memory on a SIDE x SIDE raster vs a 2048 px one "
        "(stand-in 1x1 network)",
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("MODEL", "RGB", "OUT", "N"), help=argparse.SUPPRESS
    )
    parser.add_argument("--huge-child", nargs=2, metavar=("RGB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.huge_child:
        print(json.dumps(huge_child(Path(args.huge_child[0]), Path(args.huge_child[1]))))
        return
    if args.huge:
        run_huge(args.huge)
        return
    if args.child:
        model, rgb, out, repeats = args.child
        model = None if model == "-" else model
        print(json.dumps(extraction_child(model, Path(rgb), Path(out), int(repeats))))
        return
    rows = []
    resolution_m = model_resolution(args.model)
    with tempfile.TemporaryDirectory(prefix="ternaus-bench-") as tmp:
        folder = Path(tmp)
        for side in args.sizes:
            rgb = scene_raster(folder, side, resolution_m)
            repeats = REPEATS if side <= 4096 else 2
            nets, exts = [], []
            for _ in range(repeats):  # alternately, so a busy spell slows both sides alike
                nets.append(network_alone(args.model, rgb))
                command = [sys.executable, __file__, "--child", args.model or "-", str(rgb)]
                command += [str(folder / f"out{side}.gpkg"), "1"]
                child = subprocess.run(command, check=True, capture_output=True, text=True)
                exts.append(json.loads(child.stdout.strip().splitlines()[-1]))
            net = min(nets, key=lambda r: r["seconds"])
            ext = min(exts, key=lambda r: r["seconds"])
            ext["peak_rss_mb"] = max(r["peak_rss_mb"] for r in exts)
            mpx = ext["pixels"] / 1e6
            rows.append(
                {
                    "raster": f"{side}x{side}",
                    "device": net["device"],
                    "windows": net["windows"],
                    "tile_px": net["tile_px"],
                    "batch": net["batch"],
                    "network_mpx_s": mpx / net["seconds"],
                    "extract_mpx_s": mpx / ext["seconds"],
                    "extract_km2_h": ext["area_km2"] / ext["seconds"] * 3600,
                    "efficiency": net["seconds"] / ext["seconds"],
                    "peak_rss_mb": ext["peak_rss_mb"],
                    "cuda_peak_mb": ext["cuda_peak_mb"],
                    "buildings": ext["buildings"],
                    "stages_s": ext["stages"],
                }
            )
    header = (
        f"{'raster':<12}{'windows':>8}{'tile':>6}{'device':>8}{'net Mpx/s':>10}"
        f"{'extract Mpx/s':>15}{'km2/h':>9}"
        f"{'extract/net':>13}{'peak RSS MB':>13}{'buildings':>11}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['raster']:<12}{r['windows']:>8}{r['tile_px']:>6}{r['device']:>8}"
            f"{r['network_mpx_s']:>10.3f}{r['extract_mpx_s']:>15.3f}"
            f"{r['extract_km2_h']:>9.2f}{r['efficiency']:>13.1%}{r['peak_rss_mb']:>13.0f}{r['buildings']:>11}"
        )
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak memory, {rows[-1]['raster']} / {rows[0]['raster']}: {ratio:.2f} (target <= 1.20)")
    print(
        f"extraction / network throughput: {min(r['efficiency'] for r in rows):.1%} (target >= 95%)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory_ratio": ratio}, indent=2))


def run_huge(side_px: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ternaus-huge-") as tmp:
        folder = Path(tmp)
        source = make_raster(folder, 1024, seed=1)
        for side in (2048, side_px):
            rgb = tile_raster(source, folder / f"huge{side}.tif", side)
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--huge-child",
                    str(rgb),
                    str(folder / f"huge{side}.gpkg"),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"{side}x{side} px: peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"{row['pixels'] / 1e6 / row['seconds']:.2f} Mpx/s, {row['buildings']} buildings"
            )
            (folder / f"huge{side}.tif").unlink()


if __name__ == "__main__":
    main()
