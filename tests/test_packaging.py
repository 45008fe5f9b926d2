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


def test_the_icon_ships_in_the_package_and_is_the_windows_icon(qapp):
    import xml.etree.ElementTree as ET

    from studio.app import configure_app, icon_path

    icon = resources.files("studio") / "resources" / "chainrule-studio.svg"
    assert icon.is_file() and Path(str(icon)) == icon_path()
    root = ET.fromstring(icon.read_text())
    assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 64 64"
    configure_app(qapp)
    pixmap = qapp.windowIcon().pixmap(64, 64)
    assert not pixmap.isNull() and pixmap.width() == 64
    # Not a blank square: the grid cells are drawn in several colours.
    image = pixmap.toImage()
    colours = {image.pixel(x, y) for x in range(0, 64, 4) for y in range(0, 64, 4)}
    assert len(colours) >= 4


def _desktop_entry(text: str) -> dict[str, str]:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)
    return dict(parser["Desktop Entry"])


def test_the_launcher_names_the_gui_script_and_the_icon():
    entry = _desktop_entry((ROOT / "packaging" / "chainrule-studio.desktop").read_text())
    gui_scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["gui-scripts"]
    assert entry["Type"] == "Application" and entry["Name"] == "Chainrule Studio"
    assert entry["Exec"] in gui_scripts
    assert entry["Icon"] == "chainrule-studio" == Path(str(resources.files("studio") / "resources" /
                                                            "chainrule-studio.svg")).stem
    assert entry["Terminal"] == "false" and entry["Categories"].endswith(";")


def _run_installer(tmp_path, *args, with_studio=True):
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if with_studio:
        script = bin_dir / "chainrule-studio"
        script.write_text(f"#!{sys.executable}\nfrom studio.app import main\nraise SystemExit(main())\n")
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "XDG_DATA_HOME": str(tmp_path / "data"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", str(ROOT / "packaging" / "install-desktop-entry.sh"), *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_the_install_script_puts_launcher_and_icon_in_place_and_removes_them(tmp_path):
    done = _run_installer(tmp_path)
    assert done.returncode == 0, done.stderr
    desktop = tmp_path / "data" / "applications" / "chainrule-studio.desktop"
    icon = tmp_path / "data" / "icons" / "hicolor" / "scalable" / "apps" / "chainrule-studio.svg"
    entry = _desktop_entry(desktop.read_text())
    assert entry["Exec"] == str(tmp_path / "bin" / "chainrule-studio")  # the full path, not the bare name
    assert icon.read_bytes() == (ROOT / "studio" / "resources" / "chainrule-studio.svg").read_bytes()
    assert not [p for p in desktop.parent.iterdir() if p.name.startswith(".chainrule-")]  # no temp files left

    removed = _run_installer(tmp_path, "--remove")
    assert removed.returncode == 0 and not desktop.exists() and not icon.exists()


def test_a_path_with_spaces_is_quoted_in_the_launcher(tmp_path):
    spaced = tmp_path / "my venv"
    spaced.mkdir()
    assert _run_installer(spaced).returncode == 0
    entry = _desktop_entry((spaced / "data" / "applications" / "chainrule-studio.desktop").read_text())
    assert entry["Exec"] == f'"{spaced / "bin" / "chainrule-studio"}"'


def test_the_install_script_refuses_clearly(tmp_path):
    missing = _run_installer(tmp_path, with_studio=False)
    assert missing.returncode == 1
    assert "chainrule-studio is not on PATH" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "data" / "applications").exists()
    unknown = _run_installer(tmp_path, "--frobnicate")
    assert unknown.returncode == 2 and "unknown option --frobnicate" in unknown.stderr
