"""``ternaus:extract_buildings``: the dock's extraction as a Processing algorithm.

Parameters ``RGB``, ``MS`` (optional), ``EXTENT`` (optional; required for a web layer),
``MODEL`` (optional model file), ``RESOLUTION`` (ground pixel of a web RGB layer; 0: the model's),
``OUTPUT`` (GeoPackage), and one advanced parameter per extraction option (``TILE_SIZE_PX``,
``BODY_THRESHOLD``, ``TTA``, ...: the fields of
:class:`~ternaus_qgis.core.extract_options.ExtractionOptions`, upper-cased; left as they are: the
model's or the backend's choice). Runs :func:`~ternaus_qgis.core.extraction.run_extraction`, the
code the dock's task runs, with the same backend connection (a local backend is started when
needed).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorDestination,
)

from ..backend_process import connection
from ..core.extract_options import ExtractionOptions
from ..core.extraction import ExtractionRequest, run_extraction
from ..core.raster_inputs import raster_input
from .common import (
    feedback_progress,
    image_parameters,
    model_parameter,
    option_parameters,
    options_from_parameters,
    user_errors,
)


class ExtractBuildingsAlgorithm(QgsProcessingAlgorithm):
    """Building polygons from an RGB (+ multispectral) raster into a GeoPackage."""

    RGB, MS, EXTENT, MODEL, OUTPUT = "RGB", "MS", "EXTENT", "MODEL", "OUTPUT"
    RESOLUTION = "RESOLUTION"

    def name(self) -> str:
        return "extract_buildings"

    def displayName(self) -> str:  # noqa: N802
        return "Extract buildings"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Extracts building footprints (touching buildings split apart) from an RGB raster, "
            "optionally with its multispectral partner, with a TernausNetV2 model run by the "
            "Ternaus backend. The result has the fields confidence (the probability that the "
            "building is right, when the model is calibrated; else its mean building "
            "probability) and area_m2. The advanced parameters are the dock's extraction "
            "options (tile size, building threshold, minimum area, simplification, ...); left "
            "as they are, the model's own values apply."
        )

    def createInstance(self) -> ExtractBuildingsAlgorithm:  # noqa: N802
        return ExtractBuildingsAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        for parameter in image_parameters():
            self.addParameter(parameter)
        self.addParameter(model_parameter(self.MODEL))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.RESOLUTION,
                "Ground pixel of a web RGB layer (XYZ, WMS), in metres (0: the model's)",
                QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
                optional=True,
            )
        )
        for parameter in option_parameters(ExtractionOptions):
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT,
                "Buildings",
                QgsProcessing.TypeVectorPolygon,
                defaultValue="TEMPORARY_OUTPUT",
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        rgb_layer = self.parameterAsRasterLayer(parameters, self.RGB, context)
        ms_layer = self.parameterAsRasterLayer(parameters, self.MS, context)
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not out.lower().endswith(".gpkg"):
            out = str(Path(out).with_suffix(".gpkg"))
        with user_errors(feedback):
            resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context)
            rgb = raster_input(rgb_layer, "RGB", 3, resolution or None)
            ms = raster_input(ms_layer, "multispectral", 1) if ms_layer is not None else None
            extent, extent_crs = None, rgb.crs
            if parameters.get(self.EXTENT):
                extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
                extent = self.parameterAsExtent(parameters, self.EXTENT, context, extent_crs)
                if not extent_crs.isValid():
                    extent_crs = context.project().crs() if context.project() else rgb.crs
            request = ExtractionRequest(
                rgb=rgb,
                ms=ms,
                extent=extent,
                extent_crs=extent_crs,
                out_path=Path(out),
                model=model,
                options=options_from_parameters(self, ExtractionOptions, parameters, context),
                overwrite=True,  # Processing replaces its OUTPUT, as every algorithm does
            )
            result = run_extraction(
                request,
                connection(),
                feedback_progress(feedback),
            )
        feedback.pushInfo(
            f"{result.count} buildings in {result.seconds:.1f} s on {result.device}: {result.path}"
        )
        return {self.OUTPUT: f"{result.path}|layername={result.layer_name}"}
