"""The CPU engines side by side (issue 20, part B): torch (bf16 autocast, today's default on a
CPU with bf16 units, and float32), ONNX Runtime (float32) and OpenVINO (float32, and bf16 where
the CPU has bf16 units), optionally int8 (ONNX Runtime static QDQ quantisation, OpenVINO NNCF),
on the default model, in one run.

Network throughput: the extraction's own windows of a real OpenAerialMap mosaic
(``../shared/data/hotosm_oam/<area>_rgb.tif`` read at the model's resolution, the window size
and overlap ``extract`` chooses on this CPU), ``--windows`` of them spread over the raster, the
same windows for every engine. Each round runs every engine in turn (a busy spell on a shared
machine slows all alike); the best round counts. Reported as network Mpx/s (pixels the network
sees) and km²/h (the ground each window adds to an extraction, its share of the raster's grid),
and as a ratio to torch's default precision.

Buildings: each engine extracts the held-out validation area of ``--area``
(``resources/training/<area>_val.geojson``, as ``scripts/eval_real.py`` scores it; ``--crop-px``
keeps a square of that many model pixels at its centre) through ``extract``; its buildings are
matched (SpaceNet rules, IoU > 0.5, in metres of the local UTM zone) against torch's default
run's ("F1 vs torch") and against the mapped buildings ("held-out F1"); the extraction's
km²/h there is the whole pipeline's (a small area: the engine's start-up weighs in).

    .venv/bin/python benchmarks/bench_engines.py [--area nairobi] [--windows 10] [--rounds 3]
        [--int8] [--crop-px N] [--json build/bench_engines.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.eval_real import (  # noqa: E402
    DATA,
    DEFAULT_MODEL,
    MIN_AREA_M2,
    Area,
    local_utm,
    oam_areas,
)
from ternaus_backend.evaluation.spacenet import score  # noqa: E402
from ternaus_backend.models.model_file import load_model  # noqa: E402
from ternaus_backend.pipeline import cpu_engines  # noqa: E402
from ternaus_backend.pipeline.engine import (  # noqa: E402
    cpu_has_native_bf16,
    inference_network,
    plan_device,
)
from ternaus_backend.pipeline.extract import ExtractOptions, extract, scene_windows  # noqa: E402
from ternaus_backend.pipeline.inference import read_window, run_network  # noqa: E402
from ternaus_backend.pipeline.normalize import Normalizer  # noqa: E402
from ternaus_backend.pipeline.raster import RasterInputs  # noqa: E402
from ternaus_backend.training.validation import clip_to  # noqa: E402
from ternaus_backend.vector_io import (  # noqa: E402
    read_polygons_with_properties,
    reproject_geometries,
)

CPU = torch.device("cpu")
#: Windows from the training part of another mosaic calibrate the int8 quantisation.
CALIBRATION_AREA = "zanzibar"
CALIBRATION_WINDOWS = 8


@dataclass
class Variant:
    """One way to run the network: an engine, its precision, and for int8 the quantised file
    that replaces the engine's converted model."""

    label: str
    engine: str
    precision: str
    quantised: Path | None = None
    seconds: list[float] = field(default_factory=list)

    @property
    def options(self) -> ExtractOptions:
        return ExtractOptions(engine=self.engine, precision=self.precision, device="cpu")


@contextlib.contextmanager
def quantised_model(variant: Variant) -> Iterator[None]:
    """While open, the variant's engine loads its quantised file (int8) instead of the
    converted float model (for ``extract`` and ``inference_network`` alike)."""
    if variant.quantised is None:
        yield
        return
    original = cpu_engines.converted_model
    cpu_engines.converted_model = lambda model, engine, cache=None: variant.quantised
    try:
        yield
    finally:
        cpu_engines.converted_model = original


def variants(model: torch.nn.Module, int8: bool, work: Path) -> list[Variant]:
    bf16 = cpu_has_native_bf16()
    found = [Variant(f"torch {'bf16' if bf16 else 'float32'} (default)", "torch", "auto")]
    if bf16:
        found.append(Variant("torch float32", "torch", "float32"))
    if importlib.util.find_spec("onnxruntime"):
        found.append(Variant("onnxruntime float32", "onnxruntime", "float32"))
    if importlib.util.find_spec("openvino"):
        found.append(Variant("openvino float32", "openvino", "float32"))
        if bf16:
            found.append(Variant("openvino bf16", "openvino", "bfloat16"))
    if int8:
        found.extend(int8_variants(model, work))
    return found


# -- windows ----------------------------------------------------------------------------------


@dataclass
class Windows:
    """The timed windows and what one of them is worth."""

    images: list[np.ndarray]
    tile_px: int
    overlap_px: int
    grid_windows: int
    km2_per_window: float
    resolution_m: float


def extraction_windows(model, raster: Path, count: int, tile_px: int | None = None) -> Windows:
    """``count`` of the windows ``extract`` runs on ``raster`` (default options, this CPU's
    plan; ``tile_px``: that tile size instead), spread evenly over the grid, read and
    normalised as the pipeline reads them."""
    meta = model.metadata
    with RasterInputs.open(raster, resolution_m=meta.resolution_m) as inputs:
        plan = plan_device(CPU, meta.encoder, meta.tile_size_px)
        grid, overlap = scene_windows(
            inputs.grid.height, inputs.grid.width, meta, ExtractOptions(tile_size_px=tile_px), plan
        )
        normalizer = Normalizer.fit(meta.normalization, inputs)
        positions = list(grid)
        picks = np.linspace(0, len(positions) - 1, min(count, len(positions))).round()
        images = [
            read_window(inputs, normalizer, y0, x0, grid.tile_h, grid.tile_w)[0][None]
            for _, y0, x0 in (positions[int(i)] for i in picks)
        ]
        km2 = inputs.grid.area_km2 / grid.count
        return Windows(images, grid.tile_h, overlap, grid.count, km2, inputs.grid.pixel_size_m)


def time_round(model, variant: Variant, windows: Windows) -> float:
    """Seconds for the windows through the variant's network (after one warm-up window)."""
    plan = plan_device(
        CPU, model.metadata.encoder, windows.tile_px, 1, variant.precision, engine=variant.engine
    )
    with quantised_model(variant), inference_network(model, plan) as net:
        run_network(net, windows.images[0], CPU, plan)
        started = time.perf_counter()
        for image in windows.images:
            run_network(net, image, CPU, plan)
        return time.perf_counter() - started


# -- int8 -------------------------------------------------------------------------------------


def calibration_images(model, count: int = CALIBRATION_WINDOWS, tile_px: int = 512):
    """Windows of a mosaic the held-out area is not part of (its training part's pixels)."""
    raster = DATA / "hotosm_oam" / f"{CALIBRATION_AREA}_rgb.tif"
    meta = model.metadata
    with RasterInputs.open(raster, resolution_m=meta.resolution_m) as inputs:
        normalizer = Normalizer.fit(meta.normalization, inputs)
        height, width = inputs.grid.height, inputs.grid.width
        rows = np.linspace(0, max(0, height - tile_px), count).astype(int)
        return [
            read_window(
                inputs, normalizer, int(y0), max(0, (width - tile_px) // 2), tile_px, tile_px
            )[0][None]
            for y0 in rows
        ]


def int8_variants(model, work: Path) -> list[Variant]:
    """ONNX Runtime static QDQ int8 and OpenVINO NNCF int8, each calibrated on windows of
    another mosaic; left out (with a note) where their tools are missing or fail."""
    found = []
    images = calibration_images(model)
    if importlib.util.find_spec("onnxruntime"):
        try:
            found.append(
                Variant(
                    "onnxruntime int8",
                    "onnxruntime",
                    "float32",
                    onnxruntime_int8(model, images, work),
                )
            )
        except Exception as exc:  # a benchmark reports what failed and goes on
            print(f"note: onnxruntime int8 left out: {type(exc).__name__}: {exc}"[:400])
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        try:
            found.append(
                Variant(
                    "openvino int8 (NNCF)", "openvino", "auto", openvino_int8(model, images, work)
                )
            )
        except Exception as exc:
            print(f"note: openvino int8 left out: {type(exc).__name__}: {exc}"[:400])
    elif importlib.util.find_spec("openvino"):
        print("note: openvino int8 left out: nncf is not installed")
    return found


def onnxruntime_int8(model, images: Sequence[np.ndarray], work: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = cpu_engines.converted_model(model, "onnxruntime")
    prepared, out = work / "ort_prepared.onnx", work / "ort_int8.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": image} for image in images])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def openvino_int8(model, images: Sequence[np.ndarray], work: Path) -> Path:
    """NNCF post-training int8 of the OpenVINO model. The mixed preset (asymmetric activations:
    the leaky ReLUs' outputs are mostly positive) and the first and last convolutions kept in
    float: the default preset left every logit negative (no buildings at all)."""
    import nncf
    import openvino

    source = cpu_engines.converted_model(model, "openvino")
    ov_model = openvino.Core().read_model(str(source))
    convolutions = [
        op.get_friendly_name()
        for op in ov_model.get_ordered_ops()
        if op.get_type_name() == "Convolution"
    ]
    quantised = nncf.quantize(
        ov_model,
        nncf.Dataset(list(images)),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(images),
        ignored_scope=nncf.IgnoredScope(names=[convolutions[0], convolutions[-1]]),
    )
    out = work / "openvino_int8.xml"
    openvino.save_model(quantised, str(out), compress_to_fp16=False)
    return out


# -- buildings --------------------------------------------------------------------------------


def held_out_area(name: str, crop_px: int | None, resolution_m: float) -> Area:
    (area,) = [a for a in oam_areas() if a.name == f"oam:{name}"]
    if crop_px:
        from shapely.geometry import box

        centre = area.region.centroid
        # EPSG:3857 metres are longer than ground metres away from the equator; near enough.
        half = crop_px * resolution_m / 2
        square = box(centre.x - half, centre.y - half, centre.x + half, centre.y + half)
        area.region = area.region.intersection(square)
    return area


def extract_area(model, area: Area, variant: Variant, work: Path) -> tuple[list, float, float]:
    """The variant's buildings inside the area (UTM metres, clipped), the extraction's seconds
    and the area it covered (km², the bounding box)."""
    out = work / f"{variant.label.replace(' ', '_').replace('(', '').replace(')', '')}.gpkg"
    with quantised_model(variant):
        started = time.perf_counter()
        result = extract(
            area.raster, out, model=model, bbox=area.region.bounds, options=variant.options
        )
        seconds = time.perf_counter() - started
    predicted, _ = read_polygons_with_properties(result.path) if result.count else ([], [])
    utm = local_utm(area)
    region_m = reproject_geometries([area.region], area.crs, utm)[0]
    kept, _ = clip_to(reproject_geometries(predicted, area.crs, utm), region_m, MIN_AREA_M2)
    return kept, seconds, result.area_km2


def truth_in(area: Area) -> list:
    utm = local_utm(area)
    region_m = reproject_geometries([area.region], area.crs, utm)[0]
    return clip_to(reproject_geometries(area.truth, area.crs, utm), region_m, MIN_AREA_M2)[0]


# -- report -----------------------------------------------------------------------------------


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    columns = [
        ("engine", "engine"),
        ("s_per_window", "s/window"),
        ("mpx_per_s", "network Mpx/s"),
        ("km2_per_h", "network km²/h"),
        ("ratio", "x default"),
        ("extract_s", "extract s"),
        ("extract_km2_per_h", "extract km²/h"),
        ("buildings", "buildings"),
        ("f1_vs_torch", "F1 vs torch"),
        ("held_out_f1", "held-out F1"),
        ("held_out_f1_change", "Δ held-out F1"),
    ]
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            cells.append(f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", default="nairobi", help="OAM mosaic (default nairobi)")
    parser.add_argument("--windows", type=int, default=10, help="windows timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (best counts)")
    parser.add_argument(
        "--tile-px", type=int, default=None, help="window side (default: as extract chooses)"
    )
    parser.add_argument("--int8", action="store_true", help="add int8 variants (calibrated)")
    parser.add_argument("--crop-px", type=int, default=None, help="F1 on a centre square only")
    parser.add_argument("--no-f1", action="store_true", help="throughput only")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    raster = DATA / "hotosm_oam" / f"{args.area}_rgb.tif"
    if not raster.exists():
        raise SystemExit(f"{raster} not found: the benchmark needs ../shared/data")
    model = load_model(args.model)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        work = Path(tmp)
        found = variants(model, args.int8, work)
        windows = extraction_windows(model, raster, args.windows, args.tile_px)
        print(
            f"{len(windows.images)} of the {windows.grid_windows} windows of {raster.name} "
            f"({windows.tile_px} px, overlap {windows.overlap_px} px, "
            f"{windows.resolution_m:.3f} m), {threads} threads, "
            f"bf16 units: {cpu_has_native_bf16()}",
            flush=True,
        )
        for variant in found:  # conversions (cached) before anything is timed
            time_round(model, variant, replace(windows, images=windows.images[:1]))
        for round_index in range(args.rounds):
            for variant in found:
                variant.seconds.append(time_round(model, variant, windows))
            print(
                f"round {round_index + 1}: "
                + ", ".join(f"{v.label} {v.seconds[-1]:.2f} s" for v in found),
                flush=True,
            )

        rows = []
        for variant in found:
            per_window = min(variant.seconds) / len(windows.images)
            rows.append(
                {
                    "engine": variant.label,
                    "s_per_window": per_window,
                    "mpx_per_s": windows.tile_px**2 / per_window / 1e6,
                    "km2_per_h": windows.km2_per_window / per_window * 3600,
                }
            )
        for row in rows:
            row["ratio"] = rows[0]["s_per_window"] / row["s_per_window"]

        if not args.no_f1:
            area = held_out_area(args.area, args.crop_px, windows.resolution_m)
            truth = truth_in(area)
            reference = None
            for variant, row in zip(found, rows, strict=True):
                buildings, seconds, km2 = extract_area(model, area, variant, work)
                reference = buildings if reference is None else reference
                row.update(
                    extract_s=seconds,
                    extract_km2_per_h=km2 / seconds * 3600,
                    buildings=len(buildings),
                    f1_vs_torch=score(buildings, reference).f1,
                    held_out_f1=score(buildings, truth).f1,
                )
                row["held_out_f1_change"] = row["held_out_f1"] - rows[0]["held_out_f1"]
                print(f"{variant.label}: {len(buildings)} buildings in {seconds:.1f} s", flush=True)

    print()
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "area": args.area,
            "windows": {
                "count": len(windows.images),
                "of": windows.grid_windows,
                "tile_px": windows.tile_px,
                "overlap_px": windows.overlap_px,
                "km2_per_window": windows.km2_per_window,
                "resolution_m": windows.resolution_m,
            },
            "threads": threads,
            "bf16_units": cpu_has_native_bf16(),
            "rounds": {v.label: v.seconds for v in found},
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
