"""Extraction beyond one machine: mosaics of many tiles, blocks of a scene on a Dask cluster."""
