"""``make package`` and ``make deploy``: the plugin zip, and its installation into a QGIS profile.

The zip holds one folder ``ternaus_qgis/`` with the code, ``metadata.txt``, the icon and the
styles (``resources/styles/*.qml`` -> ``ternaus_qgis/styles/``), as the official plugin repository
expects. ``deploy`` unpacks it into ``<profiles>/<profile>/python/plugins/``, enables it in the
profile's ``QGIS/QGIS3.ini``, and records the path of this checkout's backend executable in
``ternaus_qgis/backend_path.txt`` (the plugin looks there after its setting and TERNAUS_BACKEND).
``package --wheel dist/ternaus_backend-*.whl`` bundles the backend wheel (``make wheel``) as
``ternaus_qgis/wheels/``, where the plugin's "Install backend…" finds it
(``make package-with-backend``).

    python scripts/package_plugin.py package [--out dist] [--wheel WHEEL]
    python scripts/package_plugin.py deploy [--profile default] [--profiles-path DIR]
"""

from __future__ import annotations

import argparse
import configparser
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = "ternaus_qgis"
SKIP_DIRS = {"__pycache__", "wheels"}
SKIP_FILES = {"backend_path.txt"}


def version() -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def package(out_dir: Path, wheel: Path | None = None) -> Path:
    """Build ``out_dir/ternaus_qgis-<version>.zip`` (``-with-backend`` and the backend wheel in
    ``wheels/`` when ``wheel`` is given); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-with-backend" if wheel is not None else ""
    target = out_dir / f"{PLUGIN}-{version()}{suffix}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((REPO / PLUGIN).rglob("*")):
            rel = path.relative_to(REPO / PLUGIN)
            if path.is_dir() or SKIP_DIRS & set(rel.parts) or path.name in SKIP_FILES:
                continue
            if path.suffix == ".pyc":
                continue
            archive.write(path, f"{PLUGIN}/{rel.as_posix()}")
        archive.write(REPO / "metadata.txt", f"{PLUGIN}/metadata.txt")
        for style in sorted((REPO / "resources" / "styles").glob("*.qml")):
            archive.write(style, f"{PLUGIN}/styles/{style.name}")
        licence = REPO / "LICENSE"
        if licence.is_file():
            archive.write(licence, f"{PLUGIN}/LICENSE")
        if wheel is not None:
            archive.write(wheel, f"{PLUGIN}/wheels/{wheel.name}")
    return target


def default_profiles_path() -> Path:
    if sys.platform == "win32":
        return Path.home() / "AppData" / "Roaming" / "QGIS" / "QGIS3"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    return Path.home() / ".local" / "share" / "QGIS" / "QGIS3"


def deploy(zip_path: Path, profiles_path: Path, profile: str, backend: Path) -> Path:
    """Install the zip into a profile, enable it, record the backend path; returns the folder."""
    profile_dir = profiles_path / "profiles" / profile
    plugins = profile_dir / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(plugins / PLUGIN, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(plugins)
    (plugins / PLUGIN / "backend_path.txt").write_text(str(backend) + "\n")
    ini = profile_dir / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # keep the case of QGIS's keys
    if ini.is_file():
        config.read(ini, encoding="utf-8")
    if not config.has_section("PythonPlugins"):
        config.add_section("PythonPlugins")
    config.set("PythonPlugins", PLUGIN, "true")
    with open(ini, "w", encoding="utf-8") as handle:
        config.write(handle, space_around_delimiters=False)
    return plugins / PLUGIN


def main() -> None:
    parser = argparse.ArgumentParser(description="Package or deploy the Ternaus QGIS plugin.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("package")
    p.add_argument("--out", type=Path, default=REPO / "dist")
    p.add_argument("--wheel", type=Path, default=None, help="bundle this backend wheel")
    d = sub.add_parser("deploy")
    d.add_argument("--out", type=Path, default=REPO / "dist")
    d.add_argument("--profile", default="default")
    d.add_argument("--profiles-path", type=Path, default=None)
    d.add_argument("--backend", type=Path, default=REPO / ".venv" / "bin" / "ternaus")
    args = parser.parse_args()
    wheel = getattr(args, "wheel", None)
    if wheel is not None and not wheel.name.startswith("ternaus_backend-"):
        raise SystemExit(f"{wheel} is not a backend wheel: run make wheel")
    zip_path = package(args.out, wheel)
    print(f"plugin zip: {zip_path}")
    if args.command == "deploy":
        if not args.backend.is_file():
            raise SystemExit(f"{args.backend} is missing: run make setup first")
        folder = deploy(
            zip_path, args.profiles_path or default_profiles_path(), args.profile, args.backend
        )
        print(f"installed in {folder}; backend: {args.backend}")


if __name__ == "__main__":
    main()
