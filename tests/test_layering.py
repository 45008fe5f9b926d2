"""Layer rules: engines/ never imports Qt or the studio; torch only in training/export code."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 4 kept, 0 broken" in out.stdout
    # the issue-14 contracts are among them: the studio builds requests, never CLI commands
    assert "the studio never imports the CLI layer" in out.stdout
    assert "inference never imports training code" in out.stdout


def test_a_studio_import_of_a_cli_module_breaks_the_contract(tmp_path):
    """The contract is live: a copy of the tree where one studio module imports engines.cli fails lint-imports."""
    for package in ("engines", "studio"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "studio" / "borrows_the_cli.py").write_text("from engines.cli import config_from_args\n")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([exe], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "studio.borrows_the_cli -> engines.cli" in out.stdout


def test_studio_and_runtime_work_with_torch_blocked(tmp_path):
    # A meta-path blocker makes `import torch` fail as if torch were not installed.
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import engines.runtime, engines.generation, engines.registry, engines.cli
        import engines.decoding
        import studio.app, studio.main_window, studio.worker, studio.decoding_panel, studio.tabs.text_tab
        import engines.text.commands, engines.text.bench, engines.text.session
        from engines.cli import main
        assert main(["models", "--json"]) == 0
        assert main(["train", "gpt", "--data", "x", "--out", "y"]) == 1  # clear message, no traceback
        assert "torch" not in sys.modules
        print("OK")
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout
    assert "training needs torch" in out.stderr
