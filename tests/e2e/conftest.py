"""Fixtures for tests that run against the local lab (make lab-up).

The lab helpers (labtools, load) live in lab/lib, shared with benchmarks/.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "lib"))

import pytest
from labtools import INVENTORY, ansible_playbook


@pytest.fixture(scope="session")
def playbook():
    return ansible_playbook


@pytest.fixture(scope="session")
def lab_secret():
    def read(environment, name):
        text = (INVENTORY.parent / "group_vars" / environment / "secrets.yml").read_text()
        return re.search(rf"^{name}: (\S+)$", text, re.M).group(1)

    return read
