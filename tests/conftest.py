"""Shared fixtures: Qt runs offscreen; small seeded rasters live in tmp_path."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
