"""Training inputs of the default model that are made, not read as they are (make train-default).

Writes into ``--out``:
- ``banepa_train.tif``: the 32 Banepa training chips (all but ``eval_real.banepa_val_chips()``)
  mosaicked on their web-map tiles (the chips carry no georeferencing), with a mask band;
- ``banepa_train_aoi.geojson``: the chips' footprint (labels are complete there);
- ``banepa_train_val.geojson``: the westernmost column of training chips, the training run's own
  validation area (the 16 validation chips stay out of training entirely);
- ``banepa_train_labels.geojson``: the Banepa buildings that touch the training chips (for
  threshold tuning, so buildings of other chips do not count as missed);
- ``rio_<n>_aoi.geojson`` and ``rio_<n>_val.geojson`` for the Rio training tiles img50..55 and
  the building-free img58..60: the whole tile, and its southern band of 20%.

    .venv/bin/python scripts/prepare_default_data.py --out build/train-default/data
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from shapely.geometry import box, mapping, shape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_real import (  # noqa: E402
    DATA,
    banepa_train_chips,
    chip_tile,
    tile_bounds,
    write_chip_mosaic,
)

RIO_TRAIN = (50, 51, 52, 53, 54, 55)
RIO_NEGATIVES = (58, 59, 60)
RIO_ID = "013022223130_Public_img"


def write_geojson(geometry, crs: str, path: Path) -> Path:
    """One polygon feature with a named CRS (EPSG:3857 or the raster's)."""
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": crs}},
        "features": [{"type": "Feature", "properties": {}, "geometry": mapping(geometry)}],
    }
    path.write_text(json.dumps(collection))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/train-default/data"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chips = banepa_train_chips(args.data / "hotosm_oam" / "banepa_chips")
    if not chips:
        raise SystemExit(f"no Banepa chips under {args.data}")
    mosaic, footprint = write_chip_mosaic(chips, args.out / "banepa_train.tif")
    write_geojson(footprint, "EPSG:3857", args.out / "banepa_train_aoi.geojson")
    west = min(chip_tile(c)[0] for c in chips)
    column = shapely.union_all(
        [box(*tile_bounds(*chip_tile(c))) for c in chips if chip_tile(c)[0] == west]
    )
    write_geojson(column, "EPSG:3857", args.out / "banepa_train_val.geojson")
    labels = json.loads((args.data / "hotosm_oam" / "banepa_buildings.geojson").read_text())
    to_4326 = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    footprint_4326 = shapely.transform(
        footprint, lambda xy: np.column_stack(to_4326.transform(xy[:, 0], xy[:, 1]))
    )
    labels["features"] = [
        f for f in labels["features"] if shape(f["geometry"]).intersects(footprint_4326)
    ]
    (args.out / "banepa_train_labels.geojson").write_text(json.dumps(labels))
    for n in RIO_TRAIN + RIO_NEGATIVES:
        tile = args.data / "spacenet1_rio" / "images" / f"3band_{RIO_ID}{n}.tif"
        with rasterio.open(tile) as src:
            left, bottom, right, top = src.bounds
            crs = src.crs.to_string()
        write_geojson(box(left, bottom, right, top), crs, args.out / f"rio_{n}_aoi.geojson")
        band = box(left, bottom, right, bottom + 0.2 * (top - bottom))
        write_geojson(band, crs, args.out / f"rio_{n}_val.geojson")
    print(f"wrote {mosaic} ({len(chips)} chips) and validation areas in {args.out}")


if __name__ == "__main__":
    main()
