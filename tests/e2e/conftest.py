"""Fixtures for tests that run against the local lab (make lab-up)."""

import re

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
