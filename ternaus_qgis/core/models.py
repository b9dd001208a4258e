"""Models as the dock offers them: from the backend's model descriptions (``GET /v1/models``).

A model whose bands the chosen layers cannot give is offered but disabled, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .raster_inputs import FALLBACK_RESOLUTION_M, RasterInput, band_count

#: Bands a multispectral layer must have for a model that uses one (WorldView-2/3: 8 bands).
MS_BANDS_NEEDED = 8


@dataclass(frozen=True)
class ModelChoice:
    """One model file and what the dock shows of it."""

    path: str
    name: str
    is_default: bool
    uses_multispectral: bool
    band_names: tuple[str, ...]
    resolution_m: float | None
    encoder: str
    provenance: str

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ModelChoice:
        """From one ``ModelInfo`` JSON object of the backend."""
        meta = info.get("metadata") or {}
        prov = meta.get("provenance") or {}
        parts = []
        if prov.get("epochs"):
            parts.append(f"{prov['epochs']} epochs")
        if prov.get("val_f1"):
            parts.append(f"validation F1 {prov['val_f1']}")
        if prov.get("source"):
            parts.append(str(prov["source"]))
        if prov.get("date"):
            parts.append(f"trained {str(prov['date'])[:10]}")
        provenance = "; ".join(parts)
        return cls(
            path=str(info["path"]),
            name=Path(str(info["path"])).stem,
            is_default=bool(info.get("is_default")),
            uses_multispectral=bool(info.get("uses_multispectral")),
            band_names=tuple(meta.get("band_names") or ()),
            resolution_m=meta.get("resolution_m"),
            encoder=str(meta.get("encoder") or "?"),
            provenance=provenance,
        )

    @property
    def label(self) -> str:
        bands = "RGB + MS" if self.uses_multispectral else "RGB"
        default = "default, " if self.is_default else ""
        res = f", {self.resolution_m:g} m" if self.resolution_m else ""
        return f"{self.name} ({default}{bands}{res})"

    @property
    def summary(self) -> str:
        """A short HTML description for the dock."""
        bands = len(self.band_names) or "?"
        res = f"{self.resolution_m:g} m per pixel" if self.resolution_m else "any resolution"
        text = f"{self.encoder}, {bands} bands, {res}"
        if self.uses_multispectral:
            text += "; needs a multispectral layer"
        if self.provenance:
            text += f"<br>{self.provenance}"
        return text

    @property
    def description(self) -> str:
        return f"{self.path}\nbands: {', '.join(self.band_names) or '?'}"


def model_problem(choice: ModelChoice, rgb: Any, ms: Any) -> str | None:
    """Why the layers (QgsRasterLayer or None) cannot feed the model, or None when they can."""
    if rgb is not None and band_count(rgb) < 3:
        return f"the RGB layer has {band_count(rgb)} band(s); 3 are needed"
    if choice.uses_multispectral:
        if ms is None:
            return f"it needs a multispectral layer ({MS_BANDS_NEEDED} bands) besides the RGB layer"
        if ms.bandCount() < MS_BANDS_NEEDED:
            return (
                f"the multispectral layer has {ms.bandCount()} bands; {MS_BANDS_NEEDED} are needed"
            )
    return None


def choices_from_infos(infos: list[dict[str, Any]]) -> list[ModelChoice]:
    """Model choices, the default model first, no path twice."""
    seen: set[str] = set()
    result = []
    for info in sorted(infos, key=lambda i: not i.get("is_default")):
        if str(info.get("path")) in seen:
            continue
        seen.add(str(info.get("path")))
        result.append(ModelChoice.from_info(info))
    return result


def model_resolution(infos: list[dict[str, Any]], path: str | None) -> float | None:
    """The ground resolution (m) of the model at ``path`` (None: the default model), if it says."""
    for info in infos:
        if (str(info.get("path")) == path) if path else info.get("is_default"):
            return (info.get("metadata") or {}).get("resolution_m")
    return None


def with_render_resolution(
    raster: RasterInput | None, infos: list[dict[str, Any]], model: str | None
) -> RasterInput | None:
    """A web layer without a chosen resolution gets the model's (from ``GET /v1/models``)."""
    if raster is None or not raster.rendered or raster.resolution_m:
        return raster
    return replace(raster, resolution_m=model_resolution(infos, model) or FALLBACK_RESOLUTION_M)
