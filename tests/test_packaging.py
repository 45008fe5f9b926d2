"""Packaging: every package folder is declared, and shipped files are found via importlib.resources."""

import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("engines", "studio")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= declared, f"add to [tool.setuptools] packages: {sorted(found - declared)}"


def test_probe_and_assets_resolve_through_importlib_resources():
    assert (resources.files("engines") / "probe.onnx").is_file()
    assert resources.files("chainrule_assets").is_dir()
