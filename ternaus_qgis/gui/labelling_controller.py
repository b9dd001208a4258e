"""LabellingController: the Train tab's *Propose cells to label* as a task, its result as a
ranked, styled layer of cells (GUI thread).

The request is read here (the Train tab's RGB layer and starting model, the part of the image in
the map canvas); the work is :func:`~ternaus_qgis.core.labelling.run_label_cells`, the
backend's ``where_to_label`` job, the code behind ``ternaus where-to-label`` and the Processing
algorithm ``ternaus:where_to_label``.
"""

from __future__ import annotations

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRectangle

from ..backend_process import BackendConnection
from ..core import result_layers
from ..core.jobs import format_seconds
from ..core.labelling import LabelCellsRequest, LabelCellsResult, run_label_cells
from ..core.raster_inputs import raster_input
from ..core.vector_inputs import export_vector_layer
from ..exceptions import LayerError, TernausPluginError
from .messages import push_error, push_success
from .workflow import Job, Workflow


class LabellingController(Workflow):
    """Connects the Train tab's *Propose cells to label* to a task and the project."""

    def __init__(self, dock, message_bar, backend: BackendConnection, canvas=None) -> None:
        super().__init__(dock, message_bar, backend)
        self.panel = dock.train_panel
        self.canvas = canvas
        #: The layers of the latest result: [cells, buildings].
        self.layers: list = []
        self.panel.propose_requested.connect(self.run)

    def collect(self) -> LabelCellsRequest:
        """The Train tab's image, its starting model (else the default), the part of the image
        in view (the whole image without a canvas) and its training area (left out: labelled
        already)."""
        panel = self.panel
        layer = panel.rgb_layer()
        rgb = raster_input(layer, "RGB", 3, self.dock.render_resolution())
        ms_layer = panel.ms_layer()
        ms = raster_input(ms_layer, "multispectral", 1) if ms_layer is not None else None
        extent, crs = self._extent_in_view(layer)
        model = panel.base_combo.currentData() or None
        area = panel.area_layer()  # labelled already: its cells are not proposed again
        exclude = (
            export_vector_layer(area, "training area", panel.area_selected_check.isChecked())
            if area is not None
            else None
        )
        folder = result_layers.results_folder()
        return LabelCellsRequest(
            rgb=rgb,
            ms=ms,
            extent=extent,
            extent_crs=crs,
            out_path=result_layers.free_path(folder, f"{rgb.name}_where_to_label"),
            model=model,
            exclude_path=exclude,
            cell_m=panel.cell_spin.value(),
            top=panel.top_spin.value(),
            title=f"where to label - {rgb.name}",
        )

    def _extent_in_view(self, layer) -> tuple[QgsRectangle | None, object]:
        """The canvas's visible extent within the layer's, in the layer's CRS (None: the whole
        layer, when there is no canvas)."""
        crs = layer.crs()
        if self.canvas is None:
            return None, crs
        settings = self.canvas.mapSettings()
        view = settings.visibleExtent()
        canvas_crs = settings.destinationCrs()
        if canvas_crs.isValid() and canvas_crs != crs:
            transform = QgsCoordinateTransform(canvas_crs, crs, QgsProject.instance())
            view = transform.transformBoundingBox(view)
        if layer.extent().isEmpty():  # a web layer: the view is the extent
            return view, crs
        extent = view.intersect(layer.extent())
        if extent.isEmpty():
            raise LayerError(
                f"The map shows no part of '{layer.name()}': zoom to the image, then propose."
            )
        return extent, crs

    def job(self, request: LabelCellsRequest) -> Job:
        return (
            f"Ternaus: where to label in {request.rgb.name}",
            lambda progress: run_label_cells(request, self.backend, progress),
        )

    def show_running(self) -> None:
        self.panel.set_proposing(True)

    def show_progress(self, percent: float, stage: str) -> None:
        self.panel.propose_label.setText(f"{stage} ({percent:.0f} %)")

    def show_result(self, result: LabelCellsResult) -> None:
        self.panel.set_proposing(False)
        try:
            self.layers = result_layers.add_label_cells_layers(result.path, result.request.rgb.name)
        except RuntimeError as error:
            self.fail(TernausPluginError(f"The cells could not be opened: {error}.", str(error)))
            return
        seconds = format_seconds(result.seconds)
        advice = "Draw labels in the highlighted cells, then Train."
        if self.use_top_cells_as_area(self.layers[0]):
            advice = (
                "Draw labels in the highlighted cells, then Train: they are the training area "
                "(selected cells of the new layer)."
            )
        self.panel.propose_label.setText(f"{result.text} ({seconds}). {advice}")
        push_success(self.bar, f"Where to label: {result.text}; saved in {result.path}")

    def use_top_cells_as_area(self, cells) -> bool:
        """Select the top cells; when the Train tab has no training area yet, make them it
        (the layer, only its selected polygons). Returns whether it did."""
        cells.selectByExpression('"top"')
        panel = self.panel
        if panel.area_layer() is not None:
            return False
        panel.area_combo.setLayer(cells)
        panel.area_selected_check.setChecked(True)
        return True

    def show_error(self, error: TernausPluginError) -> None:
        self.panel.set_proposing(False)
        self.panel.propose_label.setText(error.message)
        push_error(self.bar, error)

    def show_refusal(self, error: TernausPluginError) -> None:
        self.show_error(error)
