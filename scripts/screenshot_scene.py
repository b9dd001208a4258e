"""The README screenshot's scene: real imagery the default model never trained on.

Writes the Kampala validation area (resources/training/kampala_val.geojson) of the OpenAerialMap
mosaic in ../shared/data as a GeoTIFF, and its OpenStreetMap buildings beside it
(``<name>_labels.geojson``: the reference of the evaluation screenshot), and prints the GeoTIFF's
path; prints nothing when the shared data is absent (make screenshot then uses the tests'
synthetic scene).

    .venv/bin/python scripts/screenshot_scene.py build/screenshot_scene.tif
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import rasterio
import shapely
import shapely.geometry
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from ternaus_backend.vector_io import read_polygons

REPO = Path(__file__).resolve().parent.parent
MOSAIC = REPO.parent / "shared" / "data" / "hotosm_oam" / "kampala_rgb.tif"
BUILDINGS = MOSAIC.with_name("kampala_buildings.geojson")
AREA = REPO / "resources" / "training" / "kampala_val.geojson"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/screenshot_scene.tif")
    if not MOSAIC.is_file():
        return
    bounds = shapely.union_all(read_polygons(AREA)).bounds
    with rasterio.open(MOSAIC) as src:
        window = from_bounds(*transform_bounds("EPSG:4326", src.crs, *bounds), src.transform)
        window = window.round_offsets().round_lengths()
        profile = dict(
            src.profile,
            width=window.width,
            height=window.height,
            transform=src.window_transform(window),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    area = shapely.box(*bounds)
    buildings = json.loads(BUILDINGS.read_text())
    buildings["features"] = [
        f for f in buildings["features"] if shapely.geometry.shape(f["geometry"]).within(area)
    ]
    out.with_name(f"{out.stem}_labels.geojson").write_text(json.dumps(buildings))
    print(out)


if __name__ == "__main__":
    main()
