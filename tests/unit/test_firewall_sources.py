"""The firewall's per-source openings: only IP addresses and networks, each in its own family's rules."""

import pytest
import sourcefile

plugin = sourcefile.load("plugins/filter/firewall_sources.py", "firewall_sources")


def test_sources_are_normalised_and_split_by_family():
    rules = [{"port": 9100, "sources": ["203.0.113.7", "2001:db8::1", "198.51.100.0/24"]}]
    assert plugin.firewall_source_problems(rules) == []
    assert plugin.firewall_sources(rules, 4) == [{"port": 9100, "sources": ["198.51.100.0/24", "203.0.113.7/32"]}]
    assert plugin.firewall_sources(rules, 6) == [{"port": 9100, "sources": ["2001:db8::1/128"]}]


def test_a_rule_with_no_source_of_the_family_or_none_at_all_is_left_out():
    assert plugin.firewall_sources([{"port": 9104, "sources": ["203.0.113.7"]}], 6) == []
    assert plugin.firewall_sources([{"port": 9100, "sources": []}], 4) == []  # no monitoring host: nothing opens
    assert plugin.firewall_source_problems([{"port": 9100, "sources": []}]) == []


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([{"port": 9100, "sources": ["dev.site"]}], "[0] (port 9100): 'dev.site' is not an IP address or network"),
        ([{"port": 9100, "sources": ["10.0.0.300"]}], "'10.0.0.300' is not an IP address"),
        ([{"port": 0, "sources": ["203.0.113.7"]}], "[0]: port must be 1-65535, got 0"),
        ([{"port": "9100", "sources": ["203.0.113.7"]}], "port must be 1-65535, got '9100'"),
        ([{"port": 9100, "sources": "203.0.113.7"}], "(port 9100): sources must be a list"),
        ({"port": 9100}, "must be a list of {port, sources}"),
    ],
)
def test_bad_rules_are_named_and_never_written(rules, problem):
    problems = plugin.firewall_source_problems(rules)
    assert len(problems) == 1 and problem in problems[0]
    assert plugin.firewall_sources(rules, 4) == []
