"""Import a Python file of the repository that is not on a package path (benchmarks, filter plugins)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(relative_path, name):
    """The module in ``ROOT / relative_path``, imported under ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
