"""Ternaus for QGIS: building footprints from imagery with a local TernausNetV2 backend.

The plugin imports only PyQGIS, ``qgis.PyQt`` and the standard library. The network runs in the
backend (``ternaus serve``, its own Python environment) which the plugin starts, or reaches at a
URL, and talks to over HTTP; QGIS's own Python never gets torch, rasterio or numpy installed.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS entry point: the plugin object for this QGIS window."""
    from .plugin import TernausPlugin

    return TernausPlugin(iface)
