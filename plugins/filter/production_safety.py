"""Would this server's data be safe? What playbooks/preflight.yml refuses, as named problems.

A prod server whose backups would be plaintext, stay on the server, or be
decryptable with a key kept on the server, a prod swarm whose overlay network
would carry the site's traffic (its database connections) between nodes in
clear, and any
server whose secrets are still the example vault's CHANGE-ME placeholders, is
refused before anything changes, unless the matching opt-out is set (each one
names exactly what it lets through).
"""

DOCUMENTATION = r"""
name: production_safety_problems
short_description: The named reasons preflight refuses a server
description:
  - Given a server's backup settings and the values of the variables that must
    not be placeholders, returns C({problems, overridden}) (lists of strings).
  - C(problems) stop the run; C(overridden) are the ones an opt-out let through
    (printed as a warning).
positional: _input
options:
  _input:
    description: >-
      C(environment), C(backup_encrypt), C(backup_offsite_enabled), C(backup_age_identity_on_server),
      C(site_topology), C(swarm_networks).
    type: dict
    required: true
  values:
    description: Variable name to value (strings or lists) checked for the placeholder marker.
    type: dict
  allow_unprotected_backups:
    description: preflight_unsafe_allow_unprotected_backups.
    type: bool
  allow_placeholders:
    description: preflight_unsafe_allow_placeholder_secrets.
    type: bool
  allow_clear_overlay:
    description: preflight_unsafe_allow_clear_overlay.
    type: bool
"""

PLACEHOLDER = "CHANGE-ME"
BACKUP_OPT_OUT = "preflight_unsafe_allow_unprotected_backups"
PLACEHOLDER_OPT_OUT = "preflight_unsafe_allow_placeholder_secrets"
OVERLAY_OPT_OUT = "preflight_unsafe_allow_clear_overlay"


def _truthy(value):
    return value is True or str(value).strip().lower() in ("true", "yes", "1", "on")


def backup_problems(settings):
    """Why a prod server's backups would not be protected (none for other environments)."""
    if settings.get("environment") != "prod":
        return []
    problems = []
    if not _truthy(settings.get("backup_encrypt")):
        problems.append("backup_encrypt is off: prod's dumps and binlog copies would be plaintext")
    if not _truthy(settings.get("backup_offsite_enabled")):
        problems.append(
            "backup_offsite_enabled is off: prod's only backups would sit on the disk of the database they protect"
        )
    if _truthy(settings.get("backup_encrypt")) and _truthy(settings.get("backup_age_identity_on_server", True)):
        problems.append(
            "backup_age_identity_on_server is on: whoever reads prod's disk could decrypt every backup; "
            "restores and drills bring the identity for their length only (make drill ENV=prod)"
        )
    return problems


def overlay_problems(settings):
    """A prod swarm's overlay networks left unencrypted (none for one server or for test)."""
    if settings.get("environment") != "prod" or settings.get("site_topology") != "swarm":
        return []
    clear = sorted(
        str(network.get("name"))
        for network in settings.get("swarm_networks") or []
        if isinstance(network, dict) and not _truthy(network.get("encrypted", True))
    )
    if not clear:
        return []
    return [
        f"swarm_networks: {', '.join(clear)} not encrypted: prod's requests and database connections would cross "
        "the network between nodes in clear"
    ]


def _holds_placeholder(value):
    if isinstance(value, dict):
        return any(_holds_placeholder(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_placeholder(v) for v in value)
    return PLACEHOLDER in str(value or "")


def placeholder_problems(values):
    """One problem naming (never showing) the variables that still hold the example placeholder."""
    names = sorted(name for name, value in (values or {}).items() if _holds_placeholder(value))
    if not names:
        return []
    return [f"still the example placeholder ({PLACEHOLDER}): {', '.join(names)}; replace them with the real values"]


def production_safety_problems(
    settings, values=None, allow_unprotected_backups=False, allow_placeholders=False, allow_clear_overlay=False
):
    """{problems, overridden}: what stops the run, and what an opt-out let through."""
    found = [(p, BACKUP_OPT_OUT, allow_unprotected_backups) for p in backup_problems(settings or {})]
    found += [(p, PLACEHOLDER_OPT_OUT, allow_placeholders) for p in placeholder_problems(values)]
    found += [(p, OVERLAY_OPT_OUT, allow_clear_overlay) for p in overlay_problems(settings or {})]
    problems = [f"{p} (to accept this, set {opt_out}=true)" for p, opt_out, allowed in found if not _truthy(allowed)]
    overridden = [f"{p} (accepted by {opt_out})" for p, opt_out, allowed in found if _truthy(allowed)]
    return {"problems": problems, "overridden": overridden}


class FilterModule:
    def filters(self):
        return {"production_safety_problems": production_safety_problems}
