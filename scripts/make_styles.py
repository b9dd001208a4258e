"""Writes resources/styles/buildings.qml with PyQGIS: the style of extraction results.

Outlines with a fill graduated by ``confidence`` (amber: unsure, blue: sure), so the buildings to
check first stand out; labels off. Run with the project's venv (it sees Debian's qgis):

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_styles.py
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsRendererRange,
    QgsVectorLayer,
)

OUT = Path(__file__).resolve().parent.parent / "resources" / "styles" / "buildings.qml"

#: (lower, upper, label, fill colour RGBA, outline colour)
RANGES = [
    (0.0, 0.6, "confidence < 0.6 (check)", "255,170,0,110", "200,110,0,255"),
    (0.6, 0.8, "confidence 0.6 - 0.8", "120,160,255,90", "40,80,200,255"),
    (0.8, 1.0, "confidence > 0.8", "30,90,230,80", "10,40,160,255"),
]


def main() -> None:
    app = QgsApplication([], False)
    app.initQgis()
    layer = QgsVectorLayer(
        "Polygon?crs=EPSG:3857&field=confidence:double&field=area_m2:double", "b", "memory"
    )
    ranges = []
    for low, high, label, fill, outline in RANGES:
        symbol = QgsFillSymbol.createSimple(
            {"color": fill, "outline_color": outline, "outline_width": "0.5"}
        )
        ranges.append(QgsRendererRange(low, high, symbol, label))
    layer.setRenderer(QgsGraduatedSymbolRenderer("confidence", ranges))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    message, ok = layer.saveNamedStyle(str(OUT))
    if not ok:
        raise SystemExit(f"could not write {OUT}: {message}")
    print(f"wrote {OUT}")
    del layer
    app.exitQgis()


if __name__ == "__main__":
    main()
