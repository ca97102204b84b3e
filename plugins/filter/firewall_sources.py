"""Source addresses for the firewall's per-source openings, checked and split by IP family.

``base_firewall_allowed_from`` opens a host port to some addresses only (the
exporters to the monitoring host). A name there would be resolved once, when
the rules load, and silently go stale; a typo would open nothing or, worse,
something else. So every source must be an IP address or network (checked
by ``firewall_source_problems`` before anything is written), and each
family's rules get only its own (``firewall_sources``).
"""

import ipaddress

DOCUMENTATION = r"""
name: firewall_sources
short_description: The allowed-from rules of one IP family
description:
  - Takes base_firewall_allowed_from (a list of {port, sources}) and returns [{port, sources}] with only
    the sources of the given family, normalised (C(203.0.113.7/32), C(2001:db8::/64)); rules with none are
    left out. firewall_source_problems, run first by the base role's checks, names every bad entry.
positional: _input, family
options:
  _input:
    description: base_firewall_allowed_from.
    type: list
    elements: dict
    required: true
  family:
    description: 4 or 6.
    type: int
    required: true
"""


def _network(source):
    try:
        return ipaddress.ip_network(str(source), strict=False)
    except ValueError:
        return None


def _rule_problems(index, rule):
    port = rule.get("port") if isinstance(rule, dict) else None
    sources = rule.get("sources") if isinstance(rule, dict) else None
    name = f"base_firewall_allowed_from[{index}]"
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return [f"{name}: port must be 1-65535, got {port!r}"]
    if not isinstance(sources, list):
        return [f"{name} (port {port}): sources must be a list of addresses"]
    return [
        f"{name} (port {port}): {source!r} is not an IP address or network "
        "(names are not allowed: they would be resolved once, when the rules load)"
        for source in sources
        if _network(source) is None
    ]


def firewall_source_problems(rules):
    """One sentence per bad entry of ``base_firewall_allowed_from``; [] when it can be used."""
    if not isinstance(rules, list):
        return ["base_firewall_allowed_from must be a list of {port, sources}"]
    return [problem for index, rule in enumerate(rules) for problem in _rule_problems(index, rule)]


def firewall_sources(rules, family):
    """``[{port, sources}]`` of ``family`` (4 or 6); entries with problems are left out (checked before)."""
    selected = []
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if _rule_problems(index, rule):
            continue
        networks = (_network(source) for source in rule["sources"])
        mine = sorted({str(net) for net in networks if net.version == family})
        if mine:
            selected.append({"port": rule["port"], "sources": mine})
    return selected


class FilterModule:
    def filters(self):
        return {"firewall_sources": firewall_sources, "firewall_source_problems": firewall_source_problems}
