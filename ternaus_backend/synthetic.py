"""Seeded synthetic overhead scenes: RGB + 8-band multispectral GeoTIFFs and building labels.

A scene is drawn as reflectance spectra (WorldView-2 bands) on a supersampled grid from vector
geometry: a textured ground of grass, dry grass and bare soil, sometimes a pond, straight and
curved roads with sidewalks, detached buildings (rectangles and L-shapes at arbitrary angles, 6 m
to 40 m), rows of terraced houses that share walls exactly (each house its own roof tint),
shadows cast in one sun direction, and tree clumps that sometimes overhang roofs. The RGB
(uint8) and the multispectral image (uint16, 0..2047, optionally ``ms_scale`` times coarser) are
both derived from the same reflectances, so their spectra agree. Building polygons are the exact
geometry the roofs were rendered from.

Everything is drawn from one ``numpy.random.Generator``: the same seed gives identical files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.features
import shapely
from affine import Affine
from rasterio.transform import from_origin
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon, box

from ternaus_backend.errors import InputError
from ternaus_backend.vector_io import write_polygons

__all__ = [
    "LANDCOVER_CLASSES",
    "MS_BANDS",
    "SceneFiles",
    "make_scene",
    "make_scenes",
]

#: Multispectral band order (WorldView-2, as in SpaceNet-2 MUL-PanSharpen).
MS_BANDS = ("coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2")

#: Land-cover codes of the ``*_landcover.tif`` written beside each scene.
LANDCOVER_CLASSES = (
    "grass",
    "dry_grass",
    "bare_soil",
    "tree",
    "water",
    "road",
    "sidewalk",
    "building",
)
_GRASS, _DRY, _SOIL, _TREE, _WATER, _ROAD, _SIDEWALK, _BUILDING = range(8)

# Surface reflectance (0..1) at the WorldView-2 band centres (427 ... 908 nm).
_SPECTRA: dict[str, tuple[float, ...]] = {
    "grass": (0.04, 0.05, 0.10, 0.08, 0.06, 0.25, 0.45, 0.47),
    "dry_grass": (0.07, 0.09, 0.14, 0.17, 0.19, 0.25, 0.32, 0.34),
    "bare_soil": (0.08, 0.10, 0.15, 0.22, 0.27, 0.31, 0.34, 0.36),
    "tree": (0.03, 0.035, 0.07, 0.05, 0.035, 0.20, 0.40, 0.42),
    "water": (0.07, 0.08, 0.07, 0.05, 0.03, 0.02, 0.012, 0.008),
    "asphalt": (0.07, 0.075, 0.08, 0.085, 0.09, 0.095, 0.10, 0.105),
    "concrete": (0.20, 0.24, 0.27, 0.29, 0.30, 0.31, 0.32, 0.32),
    # roof materials
    "red_tile": (0.06, 0.07, 0.10, 0.20, 0.30, 0.36, 0.40, 0.42),
    "grey": (0.18, 0.20, 0.22, 0.23, 0.23, 0.24, 0.25, 0.25),
    "white": (0.50, 0.58, 0.62, 0.63, 0.63, 0.62, 0.60, 0.58),
    "dark": (0.05, 0.05, 0.05, 0.05, 0.05, 0.055, 0.06, 0.06),
    "blue_metal": (0.14, 0.20, 0.16, 0.11, 0.08, 0.09, 0.10, 0.10),
    "brown": (0.05, 0.06, 0.08, 0.11, 0.14, 0.17, 0.20, 0.21),
    "galvanised": (0.30, 0.32, 0.33, 0.33, 0.33, 0.32, 0.31, 0.30),
}
_ROOFS = ("red_tile", "grey", "white", "dark", "blue_metal", "brown", "galvanised")
_HOUSE_ROOF_P = (0.32, 0.18, 0.10, 0.10, 0.06, 0.16, 0.08)
_LARGE_ROOF_P = (0.05, 0.30, 0.25, 0.05, 0.15, 0.0, 0.20)
# Fraction of light left in cast shadows, per band (skylight keeps the blue end brighter).
_SHADOW_LEFT = np.array([0.55, 0.50, 0.42, 0.38, 0.36, 0.34, 0.33, 0.33], dtype=np.float32)
# Digital numbers of the multispectral image: gain and atmospheric path offset per band.
_MS_GAIN = 1800.0
_MS_OFFSET = np.array([120, 90, 60, 40, 30, 25, 20, 15], dtype=np.float32)
_MS_MAX = 2047
_RGB_BANDS = (4, 2, 1)  # red, green, blue in MS_BANDS
_SUPERSAMPLE = 2
# Object codes on the supersampled grid (buildings are _OBJ_BUILDING + index).
_OBJ_GROUND, _OBJ_WATER, _OBJ_ROAD, _OBJ_SIDEWALK, _OBJ_TREE, _OBJ_BUILDING = range(6)


@dataclass
class SceneFiles:
    """Paths of one synthetic scene and what it contains.

    ``labels`` is a GeoJSON in the raster CRS, one Polygon feature per building with properties
    ``id`` (1-based), ``kind`` (house, l_shape, large, terraced), ``row`` (terrace number, 0 for
    detached), ``roof`` (material) and ``height_m``. ``landcover`` is a uint8 GeoTIFF on the RGB
    grid with the codes of ``LANDCOVER_CLASSES``. ``counts`` holds buildings, terraced, rows,
    touching_pairs (pairs sharing a wall), large, l_shapes, trees, overhanging_trees, roads, water.
    """

    rgb: Path
    ms: Path | None
    labels: Path
    landcover: Path
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Building:
    polygon: Polygon  # pixel coordinates of the RGB grid (x = column, y = row)
    kind: str
    roof: str
    height_m: float
    spectrum: np.ndarray
    row: int = 0
    ridge: tuple[np.ndarray, np.ndarray] | None = None  # (point on ridge, unit normal)


@dataclass
class _Crown:
    x: float
    y: float
    radius: float
    height_m: float
    phase: float


@dataclass
class _Road:
    centreline: LineString
    half_width: float
    sidewalk: float


class _Scene:
    """Geometry of one scene in RGB pixel coordinates; ``draw`` turns it into reflectances."""

    def __init__(self, rng: np.random.Generator, size_px: int, resolution_m: float) -> None:
        self.rng = rng
        self.size = size_px
        self.res = resolution_m
        self.area_factor = (size_px * resolution_m / 256.0) ** 2
        self.bounds = box(1.0, 1.0, size_px - 1.0, size_px - 1.0)
        self.grid_angle = float(rng.uniform(0.0, math.pi))
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        self.sun_dir = np.array([math.cos(azimuth), math.sin(azimuth)])  # towards the sun
        self.shadow_per_m = 1.0 / math.tan(math.radians(rng.uniform(40.0, 70.0))) / resolution_m
        self.obstacles: list[Polygon] = []
        self.water: list[Polygon] = []
        self.roads: list[_Road] = []
        self.buildings: list[_Building] = []
        self.crowns: list[_Crown] = []
        self.n_rows = 0
        self.n_overhanging = 0

    # -- helpers -----------------------------------------------------------------------------
    def px(self, metres: float) -> float:
        return metres / self.res

    def free(self, geom: Polygon, gap_m: float) -> bool:
        """True when ``geom`` is inside the scene and at least ``gap_m`` from every obstacle."""
        if not self.bounds.contains(geom):
            return False
        if not self.obstacles:
            return True
        grown = geom.buffer(self.px(gap_m), join_style="mitre")
        return not bool(shapely.intersects(grown, np.asarray(self.obstacles, dtype=object)).any())

    def random_angle(self) -> float:
        if self.rng.random() < 0.6:
            return self.grid_angle + float(self.rng.choice([0.0, math.pi / 2]))
        return float(self.rng.uniform(0.0, math.pi))

    def road_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """A point beside a random road: (front point, along-road unit, away-from-road unit)."""
        if not self.roads:
            return None
        road = self.roads[int(self.rng.integers(len(self.roads)))]
        line = road.centreline
        t = float(self.rng.uniform(0.0, line.length - 2.0))
        p0, p1 = line.interpolate(t), line.interpolate(t + 1.0)
        u = np.array([p1.x - p0.x, p1.y - p0.y])
        u /= np.linalg.norm(u)
        side = 1.0 if self.rng.random() < 0.5 else -1.0
        v = side * np.array([-u[1], u[0]])
        setback = road.half_width + road.sidewalk + self.px(float(self.rng.uniform(1.5, 6.0)))
        return np.array([p0.x, p0.y]) + setback * v, u, v

    def pick_roof(self, large: bool) -> tuple[str, np.ndarray]:
        probs = _LARGE_ROOF_P if large else _HOUSE_ROOF_P
        roof = str(self.rng.choice(_ROOFS, p=np.asarray(probs) / sum(probs)))
        return roof, self.tint(roof)

    def tint(self, roof: str, brightness: float | None = None) -> np.ndarray:
        if brightness is None:
            brightness = float(self.rng.uniform(0.85, 1.15))
        jitter = self.rng.uniform(0.95, 1.05, size=8)
        return (np.asarray(_SPECTRA[roof]) * brightness * jitter).astype(np.float32)

    # -- geometry ----------------------------------------------------------------------------
    def add_water(self) -> None:
        if self.rng.random() > 0.35:
            return
        for _ in range(20):
            radius = self.px(float(self.rng.uniform(12.0, 35.0)))
            cx, cy = self.rng.uniform(0, self.size, size=2)
            angles = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
            wobble = 1.0 + sum(
                self.rng.uniform(0.0, 0.25 / k) * np.sin(k * angles + self.rng.uniform(0, 6.3))
                for k in (2, 3, 5)
            )
            pts = np.column_stack(
                [cx + radius * wobble * np.cos(angles), cy + 0.7 * radius * wobble * np.sin(angles)]
            )
            pond = Polygon(pts)
            if pond.is_valid and self.free(pond, 3.0):
                self.water.append(pond)
                self.obstacles.append(pond)
                return

    def add_roads(self) -> None:
        n_roads = int(self.rng.integers(1, 4 if self.area_factor >= 0.5 else 2))
        reach = 1.5 * self.size
        for i in range(n_roads):
            angle = self.grid_angle + (
                0.0 if i == 0 else float(self.rng.choice([0.0, math.pi / 2]))
            )
            if i > 0 and self.rng.random() < 0.3:
                angle = float(self.rng.uniform(0.0, math.pi))
            u = np.array([math.cos(angle), math.sin(angle)])
            n = np.array([-u[1], u[0]])
            centre = self.rng.uniform(0.15, 0.85, size=2) * self.size
            t = np.linspace(-reach, reach, 121)
            offset = np.zeros_like(t)
            if self.rng.random() < 0.4:  # a gently curved road
                wavelength = self.px(float(self.rng.uniform(150.0, 400.0)))
                amplitude = self.px(float(self.rng.uniform(8.0, 30.0)))
                offset = amplitude * np.sin(
                    2.0 * math.pi * t / wavelength + self.rng.uniform(0, 6.3)
                )
            pts = centre + t[:, None] * u + offset[:, None] * n
            line = LineString(pts)
            half = self.px(float(self.rng.uniform(3.0, 6.0)))
            walk = self.px(float(self.rng.uniform(1.5, 2.5))) if self.rng.random() < 0.6 else 0.0
            outer = line.buffer(half + walk, cap_style="flat")
            clipped = line.intersection(self.bounds.buffer(half + walk))
            if clipped.is_empty or clipped.geom_type != "LineString" or clipped.length < 4:
                continue
            self.roads.append(_Road(clipped, half, walk))
            self.obstacles.append(outer.intersection(self.bounds.buffer(2 * (half + walk))))

    def add_terraces(self) -> None:
        n_rows = int(self.rng.integers(1, 4)) if self.area_factor >= 0.25 else 1
        for _ in range(n_rows):
            for attempt in range(200):
                if self.try_terrace(beside_road=attempt < 120):
                    self.n_rows += 1
                    break

    def try_terrace(self, beside_road: bool) -> bool:
        k = int(self.rng.integers(3, 9))
        widths = self.rng.uniform(5.0, 8.0, size=k)
        depths = (
            self.rng.uniform(8.0, 12.0, size=k)
            if self.rng.random() < 0.5
            else np.full(k, self.rng.uniform(8.0, 12.0))
        )
        widths_px = [self.px(float(w)) for w in widths]
        depths_px = [self.px(float(d)) for d in depths]
        frame = self.road_frame() if beside_road else None
        walls = np.concatenate([[0.0], np.cumsum(widths_px)])
        length = float(walls[-1])
        if frame is not None:
            front, u, v = frame
            origin = front - 0.5 * length * u
        else:
            angle = self.random_angle()
            u = np.array([math.cos(angle), math.sin(angle)])
            v = np.array([-u[1], u[0]])
            origin = self.rng.uniform(0, self.size, size=2)
        cache: dict[tuple[float, float], tuple[float, float]] = {}

        def world(x: float, y: float) -> tuple[float, float]:
            key = (x, y)
            if key not in cache:  # shared vertices are computed once, so walls match exactly
                p = origin + x * u + y * v
                cache[key] = (float(p[0]), float(p[1]))
            return cache[key]

        houses: list[Polygon] = []
        for i in range(k):
            x0, x1, d = float(walls[i]), float(walls[i + 1]), depths_px[i]
            ring = [world(x0, 0.0), world(x1, 0.0)]
            if i + 1 < k and depths_px[i + 1] < d:
                ring.append(world(x1, depths_px[i + 1]))
            ring += [world(x1, d), world(x0, d)]
            if i > 0 and depths_px[i - 1] < d:
                ring.append(world(x0, depths_px[i - 1]))
            houses.append(Polygon(ring))
        footprint = shapely.union_all(houses)
        if not all(h.is_valid for h in houses) or not self.free(footprint, 1.5):
            return False
        height = float(self.rng.uniform(5.0, 8.0))
        previous: tuple[str, float] | None = None
        for i, house in enumerate(houses):
            roof, brightness = self.distinct_roof(previous)
            previous = (roof, brightness)
            ridge_point = origin + (0.5 * (walls[i] + walls[i + 1])) * u + 0.5 * depths_px[i] * v
            self.buildings.append(
                _Building(
                    house,
                    "terraced",
                    roof,
                    height,
                    self.tint(roof, brightness),
                    row=self.n_rows + 1,
                    ridge=(ridge_point, v.copy()),
                )
            )
        self.obstacles.append(footprint)
        return True

    def distinct_roof(self, previous: tuple[str, float] | None) -> tuple[str, float]:
        """A roof material and brightness visibly different from the neighbour's."""
        for _ in range(50):
            roof = str(self.rng.choice(_ROOFS, p=np.asarray(_HOUSE_ROOF_P)))
            brightness = float(self.rng.uniform(0.8, 1.2))
            if previous is None or roof != previous[0] or abs(brightness - previous[1]) > 0.15:
                return roof, brightness
        return roof, brightness

    def add_detached(self) -> None:
        target = float(self.rng.uniform(0.10, 0.20)) * self.size**2
        covered = sum(b.polygon.area for b in self.buildings)
        attempts = int(600 * max(self.area_factor, 0.1))
        for _ in range(attempts):
            if covered >= target:
                break
            building = self.try_detached()
            if building is not None:
                self.buildings.append(building)
                self.obstacles.append(building.polygon)
                covered += building.polygon.area

    def try_detached(self) -> _Building | None:
        r = self.rng.random()
        kind = "large" if r < 0.1 else "l_shape" if r < 0.35 else "house"
        if kind == "large":
            w, d = self.rng.uniform(20.0, 40.0), self.rng.uniform(15.0, 30.0)
        elif kind == "l_shape":
            w, d = self.rng.uniform(10.0, 24.0), self.rng.uniform(10.0, 20.0)
        else:
            w, d = self.rng.uniform(6.0, 14.0), self.rng.uniform(6.0, 12.0)
        w_px, d_px = self.px(float(w)), self.px(float(d))
        frame = self.road_frame() if self.rng.random() < 0.5 else None
        if frame is not None:
            front, u, v = frame
            centre = front + (0.5 * d_px) * v + float(self.rng.uniform(-10, 10)) * u
        else:
            angle = self.random_angle()
            u = np.array([math.cos(angle), math.sin(angle)])
            v = np.array([-u[1], u[0]])
            centre = self.rng.uniform(0, self.size, size=2)
        if kind == "l_shape":
            a = w_px * float(self.rng.uniform(0.35, 0.6))
            b = d_px * float(self.rng.uniform(0.35, 0.6))
            local = [(0, 0), (w_px, 0), (w_px, b), (a, b), (a, d_px), (0, d_px)]
            local = [(x - 0.5 * w_px, y - 0.5 * d_px) for x, y in local]
        else:
            local = [(-0.5 * w_px, -0.5 * d_px), (0.5 * w_px, -0.5 * d_px)]
            local += [(0.5 * w_px, 0.5 * d_px), (-0.5 * w_px, 0.5 * d_px)]
        pts = np.array([centre + x * u + y * v for x, y in local])
        polygon = Polygon(pts)
        gap = 1.0 if kind == "house" else 2.5
        if not self.free(polygon, gap):
            return None
        roof, spectrum = self.pick_roof(kind == "large")
        height = float(
            self.rng.uniform(6.0, 12.0) if kind == "large" else self.rng.uniform(3.0, 7.0)
        )
        ridge = None
        if kind == "house" and self.rng.random() < 0.7:  # pitched roof, ridge along the long side
            normal = v if w_px >= d_px else u
            ridge = (centre, normal.copy())
        return _Building(polygon, kind, roof, height, spectrum, ridge=ridge)

    def add_trees(self) -> None:
        n_clumps = int(round(self.rng.uniform(3, 9) * self.area_factor)) + 1
        for _ in range(n_clumps):
            cx, cy = self.rng.uniform(0, self.size, size=2)
            spread = self.px(float(self.rng.uniform(4.0, 14.0)))
            for _ in range(int(self.rng.integers(2, 20))):
                x, y = self.rng.normal([cx, cy], spread)
                if self.on_obstacle(x, y):
                    continue
                self.add_crown(x, y, self.px(float(self.rng.uniform(1.5, 4.5))))
        for building in self.buildings:  # some trees overhang roofs
            if building.kind == "terraced" or self.rng.random() > 0.15:
                continue
            ring = building.polygon.exterior
            edge = ring.interpolate(float(self.rng.uniform(0.0, ring.length)))
            centroid = building.polygon.centroid
            out = np.array([edge.x - centroid.x, edge.y - centroid.y])
            out /= max(float(np.linalg.norm(out)), 1e-6)
            radius = self.px(float(self.rng.uniform(2.0, 4.0)))
            x, y = np.array([edge.x, edge.y]) + 0.5 * radius * out
            if not self.on_obstacle(x, y):
                self.add_crown(float(x), float(y), radius)
                self.n_overhanging += 1

    def on_obstacle(self, x: float, y: float) -> bool:
        if not (0 <= x < self.size and 0 <= y < self.size):
            return True
        point = Point(x, y)
        candidates = self.water + [b.polygon for b in self.buildings]
        return bool(candidates) and bool(
            shapely.intersects(point, np.asarray(candidates, dtype=object)).any()
        )

    def add_crown(self, x: float, y: float, radius: float) -> None:
        self.crowns.append(
            _Crown(
                x, y, radius, float(self.rng.uniform(5.0, 12.0)), float(self.rng.uniform(0, 6.3))
            )
        )

    # -- rendering ---------------------------------------------------------------------------
    def draw(
        self, buildings_crs: list[Polygon], transform: Affine
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance (H, W, 8) float32 and land-cover codes (H, W) on the RGB grid.

        Roofs are burnt from ``buildings_crs`` (the label polygons) with the raster ``transform``
        refined ``_SUPERSAMPLE`` times, so the labels are exactly what was drawn.
        """
        ss = _SUPERSAMPLE
        n = self.size
        shape_ss = (n * ss, n * ss)
        ground, ground_class = self.ground()

        obj = np.zeros(shape_ss, dtype=np.int32)
        burn: list[tuple[Any, int]] = [(w, _OBJ_WATER) for w in self.water]
        for road in self.roads:
            if road.sidewalk > 0:
                walk = road.centreline.buffer(road.half_width + road.sidewalk, cap_style="flat")
                burn.append((walk, _OBJ_SIDEWALK))
        for road in self.roads:
            burn.append((road.centreline.buffer(road.half_width, cap_style="flat"), _OBJ_ROAD))
        if burn:
            rasterio.features.rasterize(burn, out=obj, transform=Affine.scale(1.0 / ss))
        if buildings_crs:
            rasterio.features.rasterize(
                [(g, _OBJ_BUILDING + i) for i, g in enumerate(buildings_crs)],
                out=obj,
                transform=transform * Affine.scale(1.0 / ss),
            )
        is_building = obj >= _OBJ_BUILDING
        shade = np.ones(shape_ss, dtype=np.float32)
        self.shade_roofs(obj, shade)
        self.draw_crowns(obj, shade)
        shadow = self.cast_shadows(shape_ss, is_building, obj == _OBJ_TREE)

        lut = np.zeros((_OBJ_BUILDING + len(self.buildings), 8), dtype=np.float32)
        lut[_OBJ_WATER] = _SPECTRA["water"]
        lut[_OBJ_ROAD] = _SPECTRA["asphalt"]
        lut[_OBJ_SIDEWALK] = _SPECTRA["concrete"]
        lut[_OBJ_TREE] = _SPECTRA["tree"]
        for i, b in enumerate(self.buildings):
            lut[_OBJ_BUILDING + i] = b.spectrum
        objects = _block_mean(lut[obj] * shade[..., None], ss)
        ground_frac = _block_mean((obj == _OBJ_GROUND).astype(np.float32), ss)
        refl = objects + ground * ground_frac[..., None]
        shadow_frac = _block_mean(shadow.astype(np.float32), ss)
        refl *= 1.0 - shadow_frac[..., None] * (1.0 - _SHADOW_LEFT)

        landcover = self.landcover(obj, ground_class, buildings_crs, transform)
        amp_low = np.array([0.10, 0.10, 0.10, 0.12, 0.03, 0.05, 0.05, 0.03], dtype=np.float32)
        amp_fine = np.array([0.08, 0.08, 0.07, 0.15, 0.02, 0.04, 0.04, 0.03], dtype=np.float32)
        texture = 1.0 + amp_low[landcover] * _smooth_noise(self.rng, (n, n), 3.0)
        texture += amp_fine[landcover] * self.rng.standard_normal((n, n)).astype(np.float32)
        refl *= texture[..., None]
        refl = ndimage.gaussian_filter(refl, sigma=(0.5, 0.5, 0.0), mode="nearest")
        return np.clip(refl, 0.0, 1.0).astype(np.float32), landcover

    def landcover(
        self,
        obj: np.ndarray,
        ground_class: np.ndarray,
        buildings_crs: list[Polygon],
        transform: Affine,
    ) -> np.ndarray:
        """Land-cover codes on the RGB grid; buildings by the pixel-centre rule of the labels."""
        ss = _SUPERSAMPLE
        sample = obj[ss // 2 :: ss, ss // 2 :: ss]  # one sub-pixel per pixel
        cover = np.select(
            [
                sample == _OBJ_TREE,
                sample == _OBJ_ROAD,
                sample == _OBJ_SIDEWALK,
                sample == _OBJ_WATER,
            ],
            [_TREE, _ROAD, _SIDEWALK, _WATER],
            default=ground_class,
        ).astype(np.uint8)
        if buildings_crs:
            roofs = rasterio.features.rasterize(
                ((g, 1) for g in buildings_crs),
                out_shape=cover.shape,
                transform=transform,
                dtype=np.uint8,
            ).astype(bool)
            cover[roofs & (sample != _OBJ_TREE)] = _BUILDING
        return cover

    def ground(self) -> tuple[np.ndarray, np.ndarray]:
        """Textured grass / dry grass / bare soil reflectance (H, W, 8) and their class codes."""
        shape = (self.size, self.size)
        scale = self.px(30.0)
        dry = np.clip(0.5 + 0.6 * _smooth_noise(self.rng, shape, scale), 0.0, 1.0)
        soil = np.clip((_smooth_noise(self.rng, shape, scale) - 0.7) / 0.3, 0.0, 1.0)
        grass_s = np.asarray(_SPECTRA["grass"], dtype=np.float32)
        dry_s = np.asarray(_SPECTRA["dry_grass"], dtype=np.float32)
        soil_s = np.asarray(_SPECTRA["bare_soil"], dtype=np.float32)
        veg = grass_s + dry[..., None] * (dry_s - grass_s)
        refl = veg + soil[..., None] * (soil_s - veg)
        refl *= (1.0 + 0.08 * _smooth_noise(self.rng, shape, self.px(8.0)))[..., None]
        cls = np.where(soil > 0.5, _SOIL, np.where(dry > 0.5, _DRY, _GRASS)).astype(np.uint8)
        return refl.astype(np.float32), cls

    def shade_roofs(self, obj: np.ndarray, shade: np.ndarray) -> None:
        """Pitched roofs: the half facing the sun is brighter than the other."""
        ss = _SUPERSAMPLE
        for i, b in enumerate(self.buildings):
            if b.ridge is None:
                continue
            x0, y0, x1, y1 = b.polygon.bounds
            c0, r0 = max(int(x0 * ss), 0), max(int(y0 * ss), 0)
            c1, r1 = min(int(x1 * ss) + 2, obj.shape[1]), min(int(y1 * ss) + 2, obj.shape[0])
            rows, cols = np.mgrid[r0:r1, c0:c1]
            point, normal = b.ridge
            side = ((cols + 0.5) / ss - point[0]) * normal[0] + (
                (rows + 0.5) / ss - point[1]
            ) * normal[1]
            lit = float(np.dot(normal, self.sun_dir))
            factor = np.where(side * lit > 0, 1.06, 0.84).astype(np.float32)
            mine = obj[r0:r1, c0:c1] == _OBJ_BUILDING + i
            shade[r0:r1, c0:c1][mine] = factor[mine]

    def draw_crowns(self, obj: np.ndarray, shade: np.ndarray) -> None:
        """Tree crowns: irregular discs, brighter towards the sun and at the top."""
        ss = _SUPERSAMPLE
        for crown in self.crowns:
            r = crown.radius * 1.15
            c0, r0 = max(int((crown.x - r) * ss), 0), max(int((crown.y - r) * ss), 0)
            c1 = min(int((crown.x + r) * ss) + 2, obj.shape[1])
            r1 = min(int((crown.y + r) * ss) + 2, obj.shape[0])
            if c1 <= c0 or r1 <= r0:
                continue
            rows, cols = np.mgrid[r0:r1, c0:c1]
            dx = (cols + 0.5) / ss - crown.x
            dy = (rows + 0.5) / ss - crown.y
            dist = np.hypot(dx, dy)
            edge = crown.radius * (1.0 + 0.12 * np.sin(5.0 * np.arctan2(dy, dx) + crown.phase))
            inside = dist <= edge
            rel = np.clip(dist / edge, 0.0, 1.0)
            towards_sun = (dx * self.sun_dir[0] + dy * self.sun_dir[1]) / crown.radius
            light = (0.65 + 0.35 * np.sqrt(1.0 - rel**2) + 0.2 * towards_sun).astype(np.float32)
            obj[r0:r1, c0:c1][inside] = _OBJ_TREE
            shade[r0:r1, c0:c1][inside] = light[inside]

    def cast_shadows(
        self, shape_ss: tuple[int, int], is_building: np.ndarray, is_tree: np.ndarray
    ) -> np.ndarray:
        """Shadow mask on the supersampled grid: buildings shade the ground, trees anything else."""
        away = -self.sun_dir * self.shadow_per_m
        scale = Affine.scale(_SUPERSAMPLE)
        shapes: list[Polygon] = []
        for b in self.buildings:
            dx, dy = away * b.height_m
            shapes.append(shapely.affinity.translate(b.polygon, dx, dy))
            coords = np.asarray(b.polygon.exterior.coords)
            for p, q in zip(coords[:-1], coords[1:], strict=True):
                shapes.append(Polygon([p, q, (q[0] + dx, q[1] + dy), (p[0] + dx, p[1] + dy)]))
        building_shadow = _burn(shapes, shape_ss, scale)
        tree_shapes = []
        for c in self.crowns:
            dx, dy = away * c.height_m
            tree_shapes.append(Point(c.x + dx, c.y + dy).buffer(c.radius, quad_segs=4))
        tree_shadow = _burn(tree_shapes, shape_ss, scale)
        return (building_shadow & ~is_building) | (tree_shadow & ~is_tree)


def _burn(shapes: list[Polygon], shape: tuple[int, int], scale: Affine) -> np.ndarray:
    """Bool mask of ``shapes`` (RGB pixel coordinates) on a grid ``scale`` times finer."""
    if not shapes:
        return np.zeros(shape, dtype=bool)
    mask = rasterio.features.rasterize(
        ((s, 1) for s in shapes), out_shape=shape, transform=~scale, dtype=np.uint8
    )
    return mask.astype(bool)


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over non-overlapping ``k x k`` blocks of the first two axes."""
    if k == 1:
        return a
    h, w = a.shape[0] // k, a.shape[1] // k
    return a.reshape(h, k, w, k, *a.shape[2:]).mean(axis=(1, 3), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise smooth over about ``scale_px`` pixels (float32)."""
    scale = max(float(scale_px), 1.0)
    coarse_shape = (int(shape[0] / scale) + 4, int(shape[1] / scale) + 4)
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    fine = ndimage.zoom(coarse, scale, order=3, mode="mirror", grid_mode=True)
    fine = fine[: shape[0], : shape[1]]
    if fine.shape != tuple(shape):  # rounding in zoom; pad at the far edge
        fine = np.pad(fine, [(0, shape[0] - fine.shape[0]), (0, shape[1] - fine.shape[1])], "edge")
    std = float(fine.std())
    return ((fine - fine.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _to_dn_ms(refl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reflectance (h, w, 8) -> uint16 (8, h, w) digital numbers in 0..2047 with sensor noise."""
    dn = refl * _MS_GAIN + _MS_OFFSET
    dn += rng.normal(0.0, 4.0, size=dn.shape).astype(np.float32)
    return np.clip(np.rint(dn), 0, _MS_MAX).astype(np.uint16).transpose(2, 0, 1)


def _to_rgb(refl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reflectance (H, W, 8) -> uint8 (3, H, W): linear stretch, gamma, a little haze and noise."""
    rgb = refl[..., list(_RGB_BANDS)] * 1.6 + np.array([0.01, 0.012, 0.02], dtype=np.float32)
    rgb = 255.0 * np.clip(rgb, 0.0, 1.0) ** 0.6
    rgb += rng.normal(0.0, 1.5, size=rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _write_tif(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: Any,
    descriptions: tuple[str, ...] | None = None,
    photometric: str | None = None,
) -> Path:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
    }
    if photometric:
        profile["photometric"] = photometric
    if data.shape[1] >= 256 and data.shape[2] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, name)
    return path


def make_scene(
    out_dir: str | Path,
    seed: int = 0,
    size_px: int = 512,
    resolution_m: float = 0.5,
    crs: Any = "EPSG:32723",
    origin: tuple[float, float] = (683000.0, 7460000.0),
    with_ms: bool = True,
    ms_scale: int = 4,
    name: str = "scene",
) -> SceneFiles:
    """Draw one seeded synthetic scene and write it to ``out_dir``.

    ``origin`` is the upper-left corner (x, y) in ``crs`` units (metres for a projected CRS).
    Writes ``{name}_rgb.tif`` (3 x uint8, ``size_px`` square at ``resolution_m``),
    ``{name}_ms.tif`` when ``with_ms`` (8 x uint16 in ``MS_BANDS`` order, values 0..2047, pixels
    ``ms_scale`` times larger, same extent; ``ms_scale=1`` puts it on the RGB grid),
    ``{name}_labels.geojson`` and ``{name}_landcover.tif``. Same seed, same bytes.
    """
    if size_px < 32:
        raise InputError(f"size_px must be at least 32, got {size_px}.")
    if resolution_m <= 0:
        raise InputError(f"resolution_m must be positive, got {resolution_m}.")
    if ms_scale < 1 or size_px % ms_scale:
        raise InputError(
            f"ms_scale must be a positive divisor of size_px ({size_px}), got {ms_scale}: the "
            "multispectral raster must cover the same extent as the RGB one."
        )
    try:
        crs = rasterio.crs.CRS.from_user_input(crs)
    except (rasterio.errors.CRSError, ValueError) as exc:
        raise InputError(f"Unknown CRS {crs!r}: give it as 'EPSG:<code>' or WKT.") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = _Scene(rng, size_px, resolution_m)
    scene.add_roads()
    scene.add_water()
    scene.add_terraces()
    scene.add_detached()
    scene.add_trees()

    transform = from_origin(origin[0], origin[1], resolution_m, resolution_m)
    matrix = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    labels_crs = [shapely.affinity.affine_transform(b.polygon, matrix) for b in scene.buildings]
    refl, landcover = scene.draw(labels_crs, transform)

    rgb_path = _write_tif(
        out / f"{name}_rgb.tif",
        _to_rgb(refl, rng),
        transform,
        crs,
        ("red", "green", "blue"),
        photometric="RGB",
    )
    ms_path = None
    if with_ms:
        ms_transform = from_origin(
            origin[0], origin[1], resolution_m * ms_scale, resolution_m * ms_scale
        )
        ms = _to_dn_ms(_block_mean(refl, ms_scale), rng)
        ms_path = _write_tif(out / f"{name}_ms.tif", ms, ms_transform, crs, MS_BANDS)
    cover_path = _write_tif(out / f"{name}_landcover.tif", landcover[None], transform, crs)
    properties = [
        {"id": i, "kind": b.kind, "row": b.row, "roof": b.roof, "height_m": round(b.height_m, 2)}
        for i, b in enumerate(scene.buildings, start=1)
    ]
    labels_path = out / f"{name}_labels.geojson"
    write_polygons(labels_path, labels_crs, crs, properties)

    terraced = [b for b in scene.buildings if b.row]
    counts = {
        "buildings": len(scene.buildings),
        "terraced": len(terraced),
        "rows": scene.n_rows,
        "touching_pairs": len(terraced) - scene.n_rows,
        "large": sum(b.kind == "large" for b in scene.buildings),
        "l_shapes": sum(b.kind == "l_shape" for b in scene.buildings),
        "trees": len(scene.crowns),
        "overhanging_trees": scene.n_overhanging,
        "roads": len(scene.roads),
        "water": len(scene.water),
    }
    return SceneFiles(rgb_path, ms_path, labels_path, cover_path, counts)


def make_scenes(out_dir: str | Path, n: int, seed: int = 0, **kwargs: Any) -> list[SceneFiles]:
    """``n`` scenes side by side (distinct origins along x), each from its own derived seed.

    Keyword arguments go to ``make_scene``; names are ``{name}_{i:03d}`` (``name`` default
    "scene"). Scene ``i`` of base seed ``s`` uses ``SeedSequence([s, i])``, so different base
    seeds never share scenes.
    """
    name = kwargs.pop("name", "scene")
    size_px = int(kwargs.get("size_px", 512))
    resolution_m = float(kwargs.get("resolution_m", 0.5))
    x0, y0 = kwargs.pop("origin", (683000.0, 7460000.0))
    step = size_px * resolution_m + 100.0
    scenes = []
    for i in range(n):
        scene_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        scenes.append(
            make_scene(
                out_dir,
                seed=scene_seed,
                origin=(x0 + i * step, y0),
                name=f"{name}_{i:03d}",
                **kwargs,
            )
        )
    return scenes
