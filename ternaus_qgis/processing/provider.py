"""TernausProvider: the ``ternaus`` Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .changes_algorithm import DetectChangesAlgorithm
from .compare_algorithm import CompareWithMapAlgorithm
from .evaluate_algorithm import EvaluateBuildingsAlgorithm
from .extract_algorithm import ExtractBuildingsAlgorithm
from .train_algorithm import TrainModelAlgorithm
from .where_to_label_algorithm import WhereToLabelAlgorithm

ICON = Path(__file__).resolve().parent.parent / "icon.svg"


class TernausProvider(QgsProcessingProvider):
    """Building extraction (and, later, training and evaluation) as Processing algorithms."""

    def id(self) -> str:
        return "ternaus"

    def name(self) -> str:
        return "Ternaus building extraction"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS's name)
        self.addAlgorithm(ExtractBuildingsAlgorithm())
        self.addAlgorithm(EvaluateBuildingsAlgorithm())
        self.addAlgorithm(CompareWithMapAlgorithm())
        self.addAlgorithm(DetectChangesAlgorithm())
        self.addAlgorithm(TrainModelAlgorithm())
        self.addAlgorithm(WhereToLabelAlgorithm())
