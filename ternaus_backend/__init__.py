"""Ternaus backend: TernausNetV2 building extraction, training and evaluation.

Public entry points::

    from ternaus_backend import load_model, extract
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "extract"]


def __getattr__(name: str):  # lazy imports keep `import ternaus_backend` light
    if name == "load_model":
        from ternaus_backend.models.model_file import load_model

        return load_model
    if name == "extract":
        from ternaus_backend.pipeline.extract import extract

        return extract
    raise AttributeError(name)
