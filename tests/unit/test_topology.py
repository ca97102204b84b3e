"""site_topology: one host per environment, or a well-formed swarm; refusals name the group or variable."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import sourcefile
import yaml

topology = sourcefile.load("plugins/filter/topology.py", "topology")
ROOT = Path(__file__).resolve().parents[2]

SWARM = {
    "environment": "prod",
    "topology": "swarm",
    "hosts": ["node1", "node2", "node3"],
    "managers": ["node1"],
    "workers": ["node2", "node3"],
    "labels": {"node1": {"montaiguillon.database": "true"}, "node2": {}, "node3": {"zone": "b"}},
    "database_label": "montaiguillon.database=true",
    "replicas": 3,
}


def problems(**changes):
    return topology.site_topology_problems({**SWARM, **changes})


def test_one_host_per_environment_is_the_default_and_passes():
    assert topology.site_topology_problems({"environment": "test", "hosts": ["dev.site"]}) == []


def test_a_second_host_in_a_single_environment_is_refused_naming_both():
    (problem,) = topology.site_topology_problems({"environment": "prod", "hosts": ["site.com", "site2.com"]})
    assert problem.startswith("prod: 2 hosts (site.com, site2.com) with site_topology single")
    assert "separate database" in problem


def test_an_unknown_topology_is_named():
    assert problems(topology="kubernetes") == [
        "site_topology: 'kubernetes' is not a topology of prod (single or swarm)"
    ]


def test_a_well_formed_swarm_passes():
    assert problems() == []


def test_a_swarm_without_manager_is_refused_naming_the_group():
    found = problems(managers=[], workers=["node1", "node2", "node3"])
    assert found == ["prod_swarm_managers: no manager; a swarm needs 1, 3 or 5 managers"]


def test_an_even_number_of_managers_is_refused():
    (problem,) = problems(managers=["node1", "node2"], workers=["node3"])
    assert problem.startswith("prod_swarm_managers: 2 managers (node1, node2); an even number")


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"node1": {}, "node2": {}, "node3": {}}, "matches no node of prod"),
        ({"node1": {"montaiguillon.database": "false"}}, "matches no node of prod"),
        (
            {"node1": {"montaiguillon.database": "true"}, "node3": {"montaiguillon.database": "true"}},
            "matches 2 nodes of prod (node1, node3)",
        ),
    ],
)
def test_the_database_label_must_match_exactly_one_node(labels, named):
    (problem,) = problems(labels=labels)
    assert problem.startswith("swarm_database_label 'montaiguillon.database=true' ")
    assert named in problem


def test_the_database_must_be_on_the_first_manager_the_site_server():
    labels = {"node1": {}, "node2": {}, "node3": {"montaiguillon.database": "true"}}
    (problem,) = problems(labels=labels)
    assert problem.startswith("swarm_database_label 'montaiguillon.database=true' is not on node1, the first host")
    assert problems(managers=["node3", "node1", "node2"], workers=[], labels=labels) == []


def test_the_site_server_is_the_host_or_the_first_manager():
    groups = {"prod": ["node1", "node2", "node3"], "prod_swarm_managers": ["node2"], "test": ["dev.site"]}
    assert topology.site_server(groups, "test") == "dev.site"
    assert topology.site_server(groups, "prod", "swarm") == "node2"
    assert topology.site_server(groups, "prod") == "node1"
    assert topology.site_server({"prod": []}, "prod", "swarm") is None


def test_a_database_label_that_is_not_key_value_is_named():
    assert problems(database_label="database") == ["swarm_database_label: 'database' is not a node label as key=value"]


@pytest.mark.parametrize(("replicas", "named"), [(0, "(got 0)"), (-2, "(got -2)"), ("two", "(got 'two')")])
def test_replicas_below_one_are_refused(replicas, named):
    (problem,) = problems(replicas=replicas)
    assert problem.startswith("swarm_replicas: must be")
    assert named in problem


def test_nodes_in_no_group_both_groups_or_another_environment_are_named():
    found = problems(
        hosts=["node1", "node2", "node3", "node4"],
        managers=["node1", "node9"],
        workers=["node1", "node2"],
    )
    assert "node1: in both prod_swarm_managers and prod_swarm_workers; a node is one or the other" in found
    assert "node9: a swarm node of prod but not in the group prod" in found
    assert "node3, node4: in prod but in neither prod_swarm_managers nor prod_swarm_workers" in found


def _preflight_task(name):
    play = yaml.safe_load((ROOT / "playbooks" / "preflight.yml").read_text())[0]
    return next(task for task in play["tasks"] if task["name"] == name)


def run_layout_check(tmp_path, inventory):
    """The preflight's own task, run by ansible-playbook against an inventory of local hosts."""
    playbook = [
        {
            "name": "Layout",
            "hosts": "test:prod",
            "gather_facts": False,
            "tasks": [
                _preflight_task("Check the environment's layout (site_topology)"),
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    # Only the repository's filters, and the JSON callback alone (ansible.cfg adds a timing one).
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    env["ANSIBLE_FILTER_PLUGINS"] = str(ROOT / "plugins" / "filter")
    env.update(ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="0")
    run = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    result = json.loads(run.stdout)
    return {
        host: task_result.get("msg", "")
        for play in result["plays"]
        for task in play["tasks"]
        for host, task_result in task["hosts"].items()
        if task_result.get("failed")
    }


LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


def test_preflight_refuses_a_second_prod_host(tmp_path):
    inventory = {
        "all": {
            "vars": LOCAL,
            "children": {
                "test": {"hosts": {"dev.site": {}}, "vars": {"site_environment": "test"}},
                "prod": {"hosts": {"site.com": {}, "site2.com": {}}, "vars": {"site_environment": "prod"}},
            },
        }
    }
    failed = run_layout_check(tmp_path, inventory)
    assert sorted(failed) == ["site.com", "site2.com"]
    assert "prod: 2 hosts (site.com, site2.com) with site_topology single" in failed["site.com"]


def test_preflight_reads_the_swarm_groups_and_node_labels(tmp_path):
    nodes = {"node1": {"swarm_node_labels": {"montaiguillon.database": "true"}}, "node2": {}, "node3": {}}
    prod = {
        "vars": {"site_environment": "prod", "site_topology": "swarm", "swarm_replicas": 2},
        "children": {
            "prod_swarm_managers": {"hosts": {"node1": nodes["node1"], "node2": {}}},
            "prod_swarm_workers": {"hosts": {"node3": {}}},
        },
    }
    inventory = {"all": {"vars": LOCAL, "children": {"prod": prod}}}
    failed = run_layout_check(tmp_path, inventory)
    assert sorted(failed) == ["node1", "node2", "node3"]
    assert "prod_swarm_managers: 2 managers (node1, node2)" in failed["node1"]
    assert "swarm_database_label" not in failed["node1"]  # node1's label was read: exactly one match

    prod["children"]["prod_swarm_workers"]["hosts"]["node2"] = prod["children"]["prod_swarm_managers"]["hosts"].pop(
        "node2"
    )
    # One manager (labelled) and two workers: a valid swarm layout.
    assert run_layout_check(tmp_path, inventory) == {}


def test_preflight_lets_one_host_per_environment_through(tmp_path):
    inventory = {
        "all": {
            "vars": LOCAL,
            "children": {
                "test": {"hosts": {"dev.site": {}}, "vars": {"site_environment": "test"}},
                "prod": {"hosts": {"site.com": {}}, "vars": {"site_environment": "prod", "site_topology": "single"}},
            },
        }
    }
    assert run_layout_check(tmp_path, inventory) == {}


def test_swarm_peers_are_the_other_nodes_addresses_and_none_on_one_server():
    groups = {"prod_swarm_managers": ["node1"], "prod_swarm_workers": ["node2", "node3"]}
    hostvars = {
        "node1": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.1"}}},
        "node2": {"swarm_advertise_addr": "192.0.2.2", "ansible_facts": {"default_ipv4": {"address": "10.0.0.2"}}},
        "node3": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.3"}}},
    }
    assert topology.swarm_peers(groups, hostvars, "prod", "swarm", "node1") == ["10.0.0.3", "192.0.2.2"]
    assert topology.swarm_peers(groups, hostvars, "prod", "single", "node1") == []
    hostvars["node3"] = {}
    with pytest.raises(ValueError, match="no address known for node3"):
        topology.swarm_peers(groups, hostvars, "prod", "swarm", "node1")
