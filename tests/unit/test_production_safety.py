"""What preflight refuses: prod backups that are plaintext or on-server only, placeholder secrets."""

import pytest
import sourcefile

safety = sourcefile.load("plugins/filter/production_safety.py", "production_safety")

SAFE_PROD = {
    "environment": "prod",
    "backup_encrypt": True,
    "backup_offsite_enabled": True,
    "backup_age_identity_on_server": False,
}
REAL = {"vault_mysql_root_password": "f3a9c1d2e4b5a6c7d8e9f0a1", "backup_age_recipients": ["age1qqq"]}


def check(settings, values=REAL, **opt_outs):
    return safety.production_safety_problems(settings, values, **opt_outs)


def test_a_protected_prod_with_real_secrets_passes():
    assert check(SAFE_PROD) == {"problems": [], "overridden": []}


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"backup_encrypt": False}, "backup_encrypt is off"),
        ({"backup_encrypt": "false"}, "backup_encrypt is off"),
        ({"backup_offsite_enabled": False}, "backup_offsite_enabled is off"),
        ({"backup_offsite_enabled": None}, "backup_offsite_enabled is off"),
        ({"backup_age_identity_on_server": True}, "backup_age_identity_on_server is on"),
        ({"backup_age_identity_on_server": "yes"}, "backup_age_identity_on_server is on"),
    ],
)
def test_prod_with_unprotected_backups_is_refused_naming_the_variable(override, named):
    (problem,) = check({**SAFE_PROD, **override})["problems"]
    assert problem.startswith(named)
    assert "preflight_unsafe_allow_unprotected_backups=true" in problem


def test_test_environment_may_keep_plaintext_local_backups():
    assert check({"environment": "test"})["problems"] == []


def test_the_identity_left_unset_counts_as_on_the_server():
    settings = {k: v for k, v in SAFE_PROD.items() if k != "backup_age_identity_on_server"}
    (problem,) = check(settings)["problems"]
    assert problem.startswith("backup_age_identity_on_server is on: whoever reads prod's disk")


def test_without_encryption_the_identity_rule_does_not_add_noise():
    (problem,) = check({**SAFE_PROD, "backup_encrypt": False, "backup_age_identity_on_server": True})["problems"]
    assert problem.startswith("backup_encrypt is off")


def test_placeholders_are_named_never_shown_in_any_environment():
    values = {
        "vault_mysql_root_password": "example-test-root-CHANGE-ME",
        "backup_age_recipients": ["age1-example-CHANGE-ME"],
        "backup_offsite_known_hosts": "storage ssh-ed25519 AAAA",
    }
    (problem,) = check({"environment": "test"}, values)["problems"]
    assert problem.startswith(
        "still the example placeholder (CHANGE-ME): backup_age_recipients, vault_mysql_root_password;"
    )
    assert "example-test-root" not in problem


def test_both_kinds_of_problems_are_reported_together():
    problems = check({"environment": "prod"}, {"vault_registry_token": "x-CHANGE-ME"})["problems"]
    assert [p.split(" ")[0] for p in problems] == ["backup_encrypt", "backup_offsite_enabled", "still"]


def test_each_opt_out_lets_through_only_what_it_names_and_says_so():
    values = {"vault_mysql_app_password": "CHANGE-ME"}
    settings = {"environment": "prod", "backup_encrypt": True, "backup_age_identity_on_server": False}
    out = check(settings, values, allow_unprotected_backups=True)
    assert out["problems"] == [
        "still the example placeholder (CHANGE-ME): vault_mysql_app_password; replace them with the real values "
        "(to accept this, set preflight_unsafe_allow_placeholder_secrets=true)"
    ]
    assert out["overridden"] == [
        "backup_offsite_enabled is off: prod's only backups would sit on the disk of the database they protect "
        "(accepted by preflight_unsafe_allow_unprotected_backups)"
    ]
    opt_outs = {"allow_unprotected_backups": True, "allow_placeholders": True}
    assert check({"environment": "prod"}, values, **opt_outs)["problems"] == []


def test_a_prod_swarm_with_a_clear_overlay_is_refused_unless_told():
    settings = {
        "environment": "prod",
        "backup_encrypt": True,
        "backup_offsite_enabled": True,
        "backup_age_identity_on_server": False,
        "site_topology": "swarm",
        "swarm_networks": [{"name": "montaiguillon_swarm", "encrypted": False}, {"name": "sealed"}],
    }
    (problem,) = safety.production_safety_problems(settings)["problems"]
    assert problem.startswith("swarm_networks: montaiguillon_swarm not encrypted")
    assert "preflight_unsafe_allow_clear_overlay=true" in problem
    told = safety.production_safety_problems(settings, allow_clear_overlay=True)
    assert told["problems"] == [] and "accepted by preflight_unsafe_allow_clear_overlay" in told["overridden"][0]
    assert safety.production_safety_problems({**settings, "environment": "test"})["problems"] == []
    assert safety.production_safety_problems({**settings, "site_topology": "single"})["problems"] == []
