"""Ternaus for QGIS: the QGIS plugin package (PyQGIS and the standard library only).

The plugin talks to the backend (``ternaus_backend``) over HTTP on loopback and never imports
torch, rasterio or numpy-heavy code. Its dock widget, tasks and client are built in the plugin
issue; this package is reserved for them.
"""
