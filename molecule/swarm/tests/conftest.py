"""The swarm scenario's fixtures."""

import pytest


@pytest.fixture
def manager(host):
    """The host, when it is the swarm's manager (the tests that drive the swarm run there once)."""
    if "prod_swarm_managers" not in host.ansible.get_variables()["group_names"]:
        pytest.skip("asked of the manager")
    return host
