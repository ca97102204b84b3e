"""How an environment's servers are laid out, checked before anything changes.

``site_topology: single`` (the default) is one server per environment: its own
Docker engine, its own MariaDB. A second host in the same environment would
silently get a second, separate database, so it is refused.

``site_topology: swarm`` is several nodes of one Docker Swarm per environment:
managers in the group ``<env>_swarm_managers``, workers in ``<env>_swarm_workers``,
the site as a replicated service (``swarm_replicas``) and the database pinned to
the one node whose ``swarm_node_labels`` carry ``swarm_database_label``
(docs/scale.md), which must be the first manager: the site server, with the
proxy, the lock and the ledger. The inventory's shape is checked here; every
problem names the group or variable to fix.
"""

import re

DOCUMENTATION = r"""
name: site_topology_problems
short_description: The named reasons an environment's layout is refused
description:
  - Given one environment's layout (its hosts, swarm groups, node labels and
    settings), returns the list of problems (strings); empty means accepted.
positional: _input
options:
  _input:
    description: >-
      C(environment), C(topology), C(hosts), C(managers), C(workers), C(labels)
      (host -> swarm_node_labels), C(database_label), C(replicas).
    type: dict
    required: true
"""

TOPOLOGIES = ("single", "swarm")
_LABEL_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=(\S+)$")


def _names(hosts):
    return ", ".join(sorted(hosts))


def _single_problems(env, hosts):
    if len(hosts) <= 1:
        return []
    return [
        f"{env}: {len(hosts)} hosts ({_names(hosts)}) with site_topology single: each would get its own, "
        "separate database; keep one host per environment, or set site_topology: swarm (docs/scale.md)"
    ]


def _group_problems(env, hosts, managers, workers):
    problems = []
    manager_group, worker_group = f"{env}_swarm_managers", f"{env}_swarm_workers"
    if not managers:
        problems.append(f"{manager_group}: no manager; a swarm needs 1, 3 or 5 managers")
    elif len(managers) % 2 == 0:
        problems.append(
            f"{manager_group}: {len(managers)} managers ({_names(managers)}); an even number cannot keep a "
            "majority when one fails: use 1, 3 or 5"
        )
    both = set(managers) & set(workers)
    if both:
        problems.append(f"{_names(both)}: in both {manager_group} and {worker_group}; a node is one or the other")
    outside = (set(managers) | set(workers)) - set(hosts)
    if outside:
        problems.append(f"{_names(outside)}: a swarm node of {env} but not in the group {env}")
    unplaced = set(hosts) - set(managers) - set(workers)
    if unplaced:
        problems.append(f"{_names(unplaced)}: in {env} but in neither {manager_group} nor {worker_group}")
    return problems


def _label_problems(env, nodes, labels, database_label):
    match = _LABEL_RE.match(database_label) if isinstance(database_label, str) else None
    if not match:
        return [f"swarm_database_label: {database_label!r} is not a node label as key=value"]
    key, value = match.groups()
    problems, carrying = [], []
    for node in sorted(nodes):
        node_labels = labels.get(node) or {}
        if not isinstance(node_labels, dict):
            problems.append(f"{node}: swarm_node_labels must map label names to values")
            continue
        if str(node_labels.get(key, "")) == value:
            carrying.append(node)
    if problems:
        return problems
    if not carrying:
        return [
            f"swarm_database_label {database_label!r} matches no node of {env}: set it in swarm_node_labels "
            "of exactly one node (the database's volume lives there)"
        ]
    if len(carrying) > 1:
        return [
            f"swarm_database_label {database_label!r} matches {len(carrying)} nodes of {env} ({_names(carrying)}): "
            "the database is one primary on exactly one node"
        ]
    return []


def _entry_problems(env, managers, labels, database_label):
    """The database, the proxy, the lock and the ledger share the first manager (the site server)."""
    match = _LABEL_RE.match(database_label) if isinstance(database_label, str) else None
    if not managers or not match:
        return []
    key, value = match.groups()
    first = managers[0]
    if str((labels.get(first) or {}).get(key, "")) == value:
        return []
    return [
        f"swarm_database_label {database_label!r} is not on {first}, the first host of {env}_swarm_managers: "
        "the database runs on the site server with the proxy, the lock and the ledger (docs/scale.md); "
        f"label {first}, or list the labelled manager first"
    ]


def _replicas_problems(replicas):
    if isinstance(replicas, bool):
        replicas = None
    try:
        count = int(str(replicas))
    except ValueError:
        return [f"swarm_replicas: must be a whole number of at least 1 (got {replicas!r})"]
    if count < 1:
        return [f"swarm_replicas: must be at least 1 (got {count})"]
    return []


def site_topology_problems(layout):
    """The problems with one environment's layout; an empty list means accepted."""
    env = layout.get("environment", "?")
    topology = layout.get("topology") or "single"
    hosts = list(layout.get("hosts") or [])
    if topology not in TOPOLOGIES:
        return [f"site_topology: {topology!r} is not a topology of {env} (single or swarm)"]
    if topology == "single":
        return _single_problems(env, hosts)
    managers = list(layout.get("managers") or [])
    workers = list(layout.get("workers") or [])
    problems = _group_problems(env, hosts, managers, workers)
    nodes = (set(managers) | set(workers)) & set(hosts)
    labels = layout.get("labels") or {}
    label_problems = _label_problems(env, nodes, labels, layout.get("database_label"))
    problems += label_problems or _entry_problems(env, managers, labels, layout.get("database_label"))
    return problems + _replicas_problems(layout.get("replicas"))


def site_server(groups, environment, topology="single"):
    """The host that runs the environment's site: its database, proxy, lock and ledger (and backups).

    One server: the environment's host. A swarm: the first manager, the entry node; the swarm's
    other nodes run the site's tasks only, so the playbooks' site plays end there.
    """
    group = f"{environment}_swarm_managers" if topology == "swarm" else environment
    hosts = list((groups or {}).get(group) or [])
    return hosts[0] if hosts else None


def _node_address(name, host):
    address = host.get("swarm_advertise_addr") or ((host.get("ansible_facts") or {}).get("default_ipv4") or {}).get(
        "address"
    )
    if not address:
        raise ValueError(
            f"swarm: no address known for {name}: gather its facts in the same run (leave it in the limit) "
            "or set its swarm_advertise_addr"
        )
    return str(address)


def swarm_peers(groups, hostvars, environment, topology, me):
    """The addresses of the other nodes of ``me``'s swarm, which its firewall lets through; [] on one server."""
    if topology != "swarm":
        return []
    nodes = list((groups or {}).get(f"{environment}_swarm_managers") or []) + list(
        (groups or {}).get(f"{environment}_swarm_workers") or []
    )
    return sorted({_node_address(node, hostvars[node]) for node in nodes if node != me})


class FilterModule:
    def filters(self):
        return {
            "site_topology_problems": site_topology_problems,
            "site_server": site_server,
            "swarm_peers": swarm_peers,
        }
