"""Import a Python file of the repository that is not on a package path (benchmarks, filter plugins)."""

import importlib.machinery
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(relative_path, name):
    """The module in ``ROOT / relative_path``, imported under ``name``."""
    path = str(ROOT / relative_path)
    # Scripts run by name have no .py suffix: name the loader, Python cannot guess it.
    spec = importlib.util.spec_from_file_location(name, path, loader=importlib.machinery.SourceFileLoader(name, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
