"""Small widget helpers shared by the dock's tabs."""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QWidget


def layer_combo(
    parent: QWidget, filters: Any, tooltip: str = "", optional: bool = False
) -> QgsMapLayerComboBox:
    """A layer chooser for ``filters`` (QgsMapLayerProxyModel); ``optional``: empty at first."""
    combo = QgsMapLayerComboBox(parent)
    combo.setFilters(filters)
    if optional:
        combo.setAllowEmptyLayer(True)
        combo.setLayer(None)
    if tooltip:
        combo.setToolTip(tooltip)
    return combo


def current_layer(combo: QgsMapLayerComboBox, layer_type: type) -> Any:
    """The combo's layer when it is a ``layer_type``, else None."""
    layer = combo.currentLayer()
    return layer if isinstance(layer, layer_type) else None
