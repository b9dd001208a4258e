"""Writes the plugin's layer styles (resources/styles/*.qml) with PyQGIS.

- ``buildings.qml``, extraction results: outlines with a fill graduated by ``confidence`` (amber:
  unsure, blue: sure), so the buildings to check first stand out;
- ``evaluation_result.qml``: results by ``match`` (green: true positive, red: false positive);
- ``evaluation_missed.qml``: reference buildings no result matched (magenta dashed outline).

Run with the project's venv (it sees Debian's qgis):

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_styles.py
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)

STYLES = Path(__file__).resolve().parent.parent / "resources" / "styles"

#: (lower, upper, label, fill colour RGBA, outline colour)
RANGES = [
    (0.0, 0.6, "confidence < 0.6 (check)", "255,170,0,110", "200,110,0,255"),
    (0.6, 0.8, "confidence 0.6 - 0.8", "120,160,255,90", "40,80,200,255"),
    (0.8, 1.0, "confidence > 0.8", "30,90,230,80", "10,40,160,255"),
]


def save(layer: QgsVectorLayer, name: str) -> None:
    STYLES.mkdir(parents=True, exist_ok=True)
    message, ok = layer.saveNamedStyle(str(STYLES / name))
    if not ok:
        raise SystemExit(f"could not write {name}: {message}")
    print(f"wrote {STYLES / name}")


def main() -> None:
    app = QgsApplication([], False)
    app.initQgis()
    layer = QgsVectorLayer(
        "Polygon?crs=EPSG:3857&field=confidence:double&field=area_m2:double"
        "&field=match:string&field=iou:double",
        "b",
        "memory",
    )
    ranges = []
    for low, high, label, fill, outline in RANGES:
        symbol = QgsFillSymbol.createSimple(
            {"color": fill, "outline_color": outline, "outline_width": "0.5"}
        )
        ranges.append(QgsRendererRange(low, high, symbol, label))
    layer.setRenderer(QgsGraduatedSymbolRenderer("confidence", ranges))
    save(layer, "buildings.qml")
    categories = [
        QgsRendererCategory(
            "true positive",
            QgsFillSymbol.createSimple(
                {"color": "40,180,80,70", "outline_color": "20,130,50,255", "outline_width": "0.5"}
            ),
            "true positive (matched, IoU > threshold)",
        ),
        QgsRendererCategory(
            "false positive",
            QgsFillSymbol.createSimple(
                {"color": "230,40,40,110", "outline_color": "180,0,0,255", "outline_width": "0.6"}
            ),
            "false positive (no reference building)",
        ),
    ]
    layer.setRenderer(QgsCategorizedSymbolRenderer("match", categories))
    save(layer, "evaluation_result.qml")
    missed = QgsFillSymbol.createSimple(
        {
            "color": "0,0,0,0",
            "outline_color": "220,0,220,255",
            "outline_width": "0.7",
            "outline_style": "dash",
        }
    )
    layer.setRenderer(QgsSingleSymbolRenderer(missed))
    save(layer, "evaluation_missed.qml")
    del layer
    app.exitQgis()


if __name__ == "__main__":
    main()
