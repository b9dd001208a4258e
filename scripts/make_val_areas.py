"""Validation areas of the default model's OAM training areas (written once, kept in the repo).

For each hotosm_oam area, the validation area is the area's AOI clipped to one band holding
``--fraction`` of its bounding box, across its longer side, at the end (east or south). Whole areas
of the scene stay out of training, never random pixels. Usage:

    .venv/bin/python scripts/make_val_areas.py --out resources/training
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import shapely
from shapely.geometry import box, mapping, shape

AREAS = ("zanzibar", "kampala", "banepa_east", "nairobi")


def val_area(aoi_path: Path, fraction: float) -> shapely.Geometry:
    """The band of ``aoi_path``'s polygons that is kept for validation."""
    features = json.loads(aoi_path.read_text())["features"]
    aoi = shapely.union_all([shape(f["geometry"]) for f in features])
    xmin, ymin, xmax, ymax = aoi.bounds
    if (xmax - xmin) >= (ymax - ymin):  # wider than tall: the eastern band
        band = box(xmax - fraction * (xmax - xmin), ymin, xmax, ymax)
    else:  # the southern band
        band = box(xmin, ymin, xmax, ymin + fraction * (ymax - ymin))
    return aoi.intersection(band)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hotosm_oam"))
    parser.add_argument("--out", type=Path, default=Path("resources/training"))
    parser.add_argument("--fraction", type=float, default=0.25)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for area in AREAS:
        geom = val_area(args.data / f"{area}_aoi.geojson", args.fraction)
        collection = {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": {"area": area}, "geometry": mapping(geom)}
            ],
        }
        (args.out / f"{area}_val.geojson").write_text(json.dumps(collection))
        print(f"{area}: validation area {geom.area:.3g} deg^2")


if __name__ == "__main__":
    main()
