"""``make wheel``: the backend as a wheel (``dist/ternaus_backend-<version>-py3-none-any.whl``).

The wheel holds the package ``ternaus_backend``, the ``ternaus`` command
and the embedded default model (``ternaus_backend/resources/models/``); its dependencies (torch
pinned, numpy<2, rasterio, ...) are declared, not bundled. The plugin's "Install backend…" installs
it into a virtual environment of its own; ``make package-with-backend`` puts it into the plugin zip.

The sources are copied into a temporary folder first, so the build never leaves ``build/`` or a
stale ``build/lib`` (with modules deleted since) in the checkout. Needs ``setuptools>=68`` and
``wheel`` in the running Python (``make setup`` installs them; no build isolation, so no network).

    python scripts/build_wheel.py [--out dist]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: What the build reads: pyproject.toml names the rest.
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "ternaus_backend", "resources/models"]


def build_wheel(out_dir: Path, python: str = sys.executable) -> Path:
    """Build the backend wheel into ``out_dir`` (replacing an older one); returns its path."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    with tempfile.TemporaryDirectory(prefix="ternaus-wheel-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        for name in SOURCES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=ignore)
            elif path.is_file():
                shutil.copy2(path, source / name)
        built = Path(tmp) / "wheel"
        subprocess.run(
            [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
            + ["--wheel-dir", str(built), str(source)],
            check=True,
        )
        wheels = sorted(built.glob("ternaus_backend-*.whl"))
        if len(wheels) != 1:
            raise SystemExit(f"expected one ternaus_backend wheel, pip built: {wheels}")
        target = out_dir / wheels[0].name
        target.unlink(missing_ok=True)
        shutil.move(str(wheels[0]), target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the Ternaus backend wheel.")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    args = parser.parse_args()
    print(f"backend wheel: {build_wheel(args.out)}")


if __name__ == "__main__":
    main()
