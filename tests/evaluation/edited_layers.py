"""Building layers whose differences are known: Kampala's mapped buildings (HOT OSM /
OpenAerialMap, ../shared/data/hotosm_oam) edited by rules, for the tests of ``compare`` and
``changes``.

The edits are picked where they cannot be confused: removed buildings have no other building
within a few metres, enlarged ones stay 1 m from the others once enlarged, added buildings are
8 x 12 m rectangles where no building lies within 10 m. Edited layers are written in UTM 36N
(EPSG:32636) while the original stays a WGS 84 GeoJSON, so the code under test also reprojects.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, box

from ternaus_backend.vector_io import polygon_parts, read_features, write_polygons
from tests.helpers import SHARED_DATA

KAMPALA = SHARED_DATA / "hotosm_oam" / "kampala_buildings.geojson"
UTM = "EPSG:32636"
ADDED_ID = 10_000  # ids of added buildings: 10000, 10001, ...


@dataclass
class Buildings:
    """Kampala's buildings in UTM 36N, with their ``id`` attributes."""

    geometries: np.ndarray
    ids: list[int]


def kampala() -> Buildings:
    """The 206 buildings; skips the test when ../shared/data is absent."""
    if not KAMPALA.is_file():
        pytest.skip(f"shared data not found: {KAMPALA}")
    data = read_features(KAMPALA, dst_crs=UTM)
    geoms = np.empty(len(data.geometries), dtype=object)
    geoms[:] = [g if g.is_valid else MultiPolygon(polygon_parts(g)) for g in data.geometries]
    return Buildings(geoms, [int(p["id"]) for p in data.properties])


def isolated(buildings: Buildings, count: int, rng: np.random.Generator, margin_m: float):
    """``count`` indices of buildings with no other building within ``margin_m``."""
    geoms = buildings.geometries
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=margin_m)
    crowded = np.zeros(len(geoms), dtype=bool)
    crowded[left[left != right]] = True
    return sorted(rng.choice(np.flatnonzero(~crowded), count, replace=False).tolist())


def roomy(
    buildings: Buildings, count: int, rng: np.random.Generator, scale: float, exclude=()
) -> list[int]:
    """``count`` indices of buildings that, scaled by ``scale`` about their centroid, stay
    1 m away from every other building."""
    geoms = buildings.geometries
    grown = np.array([affinity.scale(g, scale, scale, origin="centroid") for g in geoms])
    tree = shapely.STRtree(geoms)
    left, right = tree.query(grown, predicate="dwithin", distance=1.0)
    crowded = np.zeros(len(geoms), dtype=bool)
    crowded[left[left != right]] = True
    crowded[list(exclude)] = True
    return sorted(rng.choice(np.flatnonzero(~crowded), count, replace=False).tolist())


def empty_spots(buildings: Buildings, count: int, rng: np.random.Generator) -> list:
    """``count`` 8 x 12 m rectangles inside the buildings' extent, 10 m from any building and
    from each other."""
    geoms = buildings.geometries
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    xs, ys = np.meshgrid(np.arange(x0 + 10, x1 - 20, 25.0), np.arange(y0 + 10, y1 - 20, 25.0))
    candidates = [box(x, y, x + 8, y + 12) for x, y in zip(xs.ravel(), ys.ravel(), strict=True)]
    tree = shapely.STRtree(geoms)
    free = [c for c in candidates if len(tree.query(c, predicate="dwithin", distance=10.0)) == 0]
    assert len(free) >= count, "Kampala's block has fewer empty spots than the test needs"
    return [free[i] for i in sorted(rng.choice(len(free), count, replace=False))]


def original(folder: Path) -> Path:
    """A copy of the original buildings in ``folder`` (backends read only allowed folders)."""
    copy = folder / KAMPALA.name
    shutil.copyfile(KAMPALA, copy)
    return copy


@dataclass
class MapCase:
    """A "map" (the original buildings) and a "result" (our extraction, made from the map)."""

    reference: Path
    result: Path
    removed_ids: list[int]
    added_ids: list[int]
    shift: tuple[float, float]


def map_and_result(
    folder: Path, shift=(2.0, 1.0), remove: int = 10, add: int = 5, seed: int = 0
) -> MapCase:
    """The result: the map's buildings moved by ``shift`` (metres east, north in UTM 36N),
    ``remove`` of them deleted and ``add`` new ones, each with a ``confidence`` (the added ones
    0.9, 0.8, ...; the others between 0.5 and 1)."""
    buildings = kampala()
    rng = np.random.default_rng(seed)
    removed = isolated(buildings, remove, rng, margin_m=3.0)
    keep = [i for i in range(len(buildings.ids)) if i not in set(removed)]
    moved = shapely.transform(buildings.geometries[keep], lambda xy: xy + np.array(shift))
    geoms = list(moved)
    rows = [{"id": buildings.ids[i], "confidence": float(rng.uniform(0.5, 1.0))} for i in keep]
    for k, spot in enumerate(empty_spots(buildings, add, rng)):
        geoms.append(spot)
        rows.append({"id": ADDED_ID + k, "confidence": round(0.9 - 0.1 * k, 2)})
    result = write_polygons(folder / "result.gpkg", geoms, UTM, rows)
    return MapCase(
        original(folder),
        result,
        [buildings.ids[i] for i in removed],
        [r["id"] for r in rows[-add:]],
        shift,
    )


@dataclass
class DatesCase:
    """Two "dates": before (the original buildings) and after (edited)."""

    before: Path
    after: Path
    removed_ids: list[int]
    added_ids: list[int]
    enlarged_ids: list[int]


def second_date(
    folder: Path, remove: int = 8, add: int = 6, enlarge: int = 4, seed: int = 1
) -> DatesCase:
    """The later date: ``remove`` buildings gone, ``add`` new ones, ``enlarge`` of them 40 %
    wider and 40 % longer about their centroid (area x 1.96, IoU with the original 1/1.96 =
    0.51: matched at 0.3, changed below 0.7); the rest as they were."""
    buildings = kampala()
    rng = np.random.default_rng(seed)
    removed = isolated(buildings, remove, rng, margin_m=2.0)
    enlarged = roomy(buildings, enlarge, rng, 1.4, exclude=removed)
    geoms, rows = [], []
    for i, geom in enumerate(buildings.geometries):
        if i in removed:
            continue
        if i in enlarged:
            geom = affinity.scale(geom, 1.4, 1.4, origin="centroid")
        geoms.append(geom)
        rows.append({"id": buildings.ids[i]})
    for k, spot in enumerate(empty_spots(buildings, add, rng)):
        geoms.append(spot)
        rows.append({"id": ADDED_ID + k})
    after = write_polygons(folder / "after.gpkg", geoms, UTM, rows)
    return DatesCase(
        original(folder),
        after,
        [buildings.ids[i] for i in removed],
        [ADDED_ID + k for k in range(add)],
        [buildings.ids[i] for i in enlarged],
    )
