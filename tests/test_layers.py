"""The layer check itself: it passes on the package and catches each kind of violation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "scripts" / "check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "backup_exporter"
    for rel, text in {"__init__.py": "", "core/__init__.py": "", "serve/__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_package_imports_only_point_down() -> None:
    assert _checker().check(REPO / "backup_exporter") == []


def test_an_upward_import_is_reported_with_its_line(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "core/naming.py": "from backup_exporter.serve import daemon\n",
        "serve/daemon.py": "",
    })
    problems = _checker().check(root)
    assert any("core/naming.py:1: imports backup_exporter.serve.daemon" in p and "higher layer serve" in p
               for p in problems), problems


def test_an_import_inside_a_function_is_reported(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "serve/daemon.py": "def run():\n    from backup_exporter.core import naming\n",
        "core/naming.py": "",
    })
    assert any("inside a function" in p for p in _checker().check(root))


def test_a_cycle_within_one_layer_is_reported(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "serve/a.py": "from backup_exporter.serve import b\n",
        "serve/b.py": "from backup_exporter.serve import a\n",
    })
    assert any(p.startswith("import cycle:") for p in _checker().check(root))


def test_a_package_outside_every_layer_is_reported(tmp_path: Path) -> None:
    root = _package(tmp_path, {"misc/__init__.py": ""})
    assert any("in no layer" in p for p in _checker().check(root))
