"""Writes the plugin's layer styles (resources/styles/*.qml) with PyQGIS.

- ``buildings.qml``, extraction results: outlines with a fill graduated by ``confidence`` (amber:
  unsure, blue: sure), so the buildings to check first stand out;
- ``evaluation_result.qml``: results by ``match`` (green: true positive, red: false positive);
- ``evaluation_missed.qml``: reference buildings no result matched (magenta dashed outline);
- ``map_unmapped.qml`` (``ternaus compare``): buildings seen and not on the map, cyan, labelled
  by ``rank``; ``map_unseen.qml``: map buildings not seen, yellow dashed; ``map_offsets.qml``: the
  map's offset vectors (a dot at the map, an arrow toward the imagery), labelled with dx/dy;
- ``changes_new.qml``, ``changes_demolished.qml``, ``changes_changed.qml`` (``ternaus changes``):
  new buildings green, demolished red dashed, changed orange with the area change as a label.

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
    QgsLineSymbol,
    QgsMarkerLineSymbolLayer,
    QgsMarkerSymbol,
    QgsPalLayerSettings,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSingleSymbolRenderer,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

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
    comparison_styles()
    del layer
    app.exitQgis()


def fill(color: str, outline: str, width: str = "0.6", style: str = "solid") -> QgsFillSymbol:
    return QgsFillSymbol.createSimple(
        {"color": color, "outline_color": outline, "outline_width": width, "outline_style": style}
    )


def labelled(layer: QgsVectorLayer, expression: str, color: str, at_start: bool = False) -> None:
    """Labels from ``expression`` (small, haloed) on ``layer``; ``at_start``: around the first
    vertex of each line (an offset of a metre is far shorter than its label, and a label along
    a line shorter than itself is not drawn)."""
    settings = QgsPalLayerSettings()
    settings.fieldName = expression
    settings.isExpression = True
    if at_start:
        settings.geometryGeneratorEnabled = True
        settings.geometryGenerator = "start_point($geometry)"
        settings.geometryGeneratorType = QgsWkbTypes.PointGeometry
        settings.placement = QgsPalLayerSettings.AroundPoint
        settings.dist = 1.0
    text = QgsTextFormat()
    text.setSize(8)
    text.setColor(QColor(color))
    buffer = text.buffer()
    buffer.setEnabled(True)
    buffer.setSize(0.8)
    text.setBuffer(buffer)
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)


def comparison_styles() -> None:
    """The layers of ``ternaus compare`` and ``ternaus changes``."""
    polygons = QgsVectorLayer(
        "Polygon?crs=EPSG:3857&field=rank:integer&field=confidence:double&field=iou:double"
        "&field=area_m2:double&field=area_change_pct:double",
        "p",
        "memory",
    )
    polygons.setRenderer(QgsSingleSymbolRenderer(fill("0,200,230,90", "0,140,190,255", "0.7")))
    labelled(polygons, "'#' || \"rank\"", "0,90,130")
    save(polygons, "map_unmapped.qml")
    polygons.setLabelsEnabled(False)
    # Yellow, not grey: a grey dashed outline vanishes among the roads and shadows of imagery.
    polygons.setRenderer(
        QgsSingleSymbolRenderer(fill("255,210,0,35", "255,210,0,255", "0.8", "dash"))
    )
    save(polygons, "map_unseen.qml")
    polygons.setRenderer(QgsSingleSymbolRenderer(fill("40,190,60,110", "10,130,30,255")))
    save(polygons, "changes_new.qml")
    polygons.setRenderer(
        QgsSingleSymbolRenderer(fill("230,40,40,40", "200,0,0,255", "0.7", "dash"))
    )
    save(polygons, "changes_demolished.qml")
    polygons.setRenderer(QgsSingleSymbolRenderer(fill("255,150,0,110", "210,100,0,255")))
    labelled(
        polygons,
        "if(\"area_change_pct\" >= 0, '+', '') || format_number(\"area_change_pct\", 0) || ' %'",
        "150,70,0",
    )
    save(polygons, "changes_changed.qml")

    lines = QgsVectorLayer(
        "LineString?crs=EPSG:3857&field=scope:string&field=dx_m:double&field=dy_m:double"
        "&field=offset_m:double&field=pairs:integer",
        "l",
        "memory",
    )
    symbol = QgsLineSymbol.createSimple({"line_color": "220,0,120,255", "line_width": "0.8"})
    head = QgsMarkerSymbol.createSimple(
        {"name": "filled_arrowhead", "color": "220,0,120,255", "size": "3"}
    )
    arrow = QgsMarkerLineSymbolLayer(True)
    arrow.setPlacement(QgsMarkerLineSymbolLayer.LastVertex)
    arrow.setSubSymbol(head)
    symbol.appendSymbolLayer(arrow)
    dot = QgsMarkerSymbol.createSimple({"name": "circle", "color": "220,0,120,255", "size": "1.6"})
    start = QgsMarkerLineSymbolLayer(True)
    start.setPlacement(QgsMarkerLineSymbolLayer.FirstVertex)
    start.setSubSymbol(dot)
    symbol.appendSymbolLayer(start)
    lines.setRenderer(QgsSingleSymbolRenderer(symbol))
    labelled(
        lines,
        "format_number(\"dx_m\", 1) || ' m E, ' || format_number(\"dy_m\", 1) || ' m N ('"
        " || \"pairs\" || ')'",
        "140,0,80",
        at_start=True,
    )
    save(lines, "map_offsets.qml")
    del polygons, lines


if __name__ == "__main__":
    main()
