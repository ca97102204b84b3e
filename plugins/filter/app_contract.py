"""The app contract: what a site declares, checked and turned into what its containers get.

Any image can be deployed if it answers HTTP on a port with a 2xx on a health
path. The rest is declared per app and checked here, on the controller, before
anything changes on a server: which of our database facts the app reads and
under which variable names (``WORDPRESS_DB_HOST`` for one site, ``APP_DB_HOST``
for ours), where its health and version paths are.

The database password always reaches the serving slots as a file
(``NAME_FILE=/run/secrets/NAME``), the migrations password only the one-off
migration container: the mapping names the variable, never how a secret travels.
"""

import re

DOCUMENTATION = r"""
name: app_database_environment
short_description: Map the database facts to the variables an app reads
description:
  - C(app_database_environment) takes C(app_database_environment) (fact -> variable
    name) and the facts (C(app_database_facts)) and returns
    C({env, secret_files, migrate_secret_env, problems}).
  - C(app_contract_problems) checks the port, health path and version path.
positional: _input
options:
  _input:
    description: The mapping (for app_database_environment), the app's port (for app_contract_problems).
    type: raw
    required: true
"""

# Our database facts and how each travels to the app's containers.
PLAIN = "env"
SLOT_SECRET = "secret_files"  # noqa: S105 - a result key, not a secret
MIGRATE_SECRET = "migrate_secret_env"  # noqa: S105 - a result key, not a secret
DATABASE_FACTS = {
    "host": PLAIN,
    "port": PLAIN,
    "name": PLAIN,
    "user": PLAIN,
    "password": SLOT_SECRET,
    "migrate_user": PLAIN,
    "migrate_password": MIGRATE_SECRET,
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")


def _mapping_problems(mapping, facts):
    problems, seen = [], {}
    for fact, variable in mapping.items():
        where = f"app_database_environment.{fact}"
        if fact not in DATABASE_FACTS:
            known = ", ".join(sorted(DATABASE_FACTS))
            problems.append(f"{where}: {fact!r} is not a database fact (known: {known})")
            continue
        if not isinstance(variable, str) or not _NAME_RE.match(variable):
            problems.append(f"{where}: {variable!r} is not an environment variable name (letters, digits, '_')")
            continue
        if variable in seen:
            problems.append(f"{where}: {variable} is already the variable of {seen[variable]!r}")
        seen[variable] = fact
        if facts.get(fact) in (None, ""):
            problems.append(f"{where}: the database fact {fact!r} has no value (app_database_facts.{fact})")
    return problems


def app_database_environment(mapping, facts):
    """``{env, secret_files, migrate_secret_env, problems}`` for a fact -> variable mapping."""
    if mapping in (None, ""):
        mapping = {}
    result = {PLAIN: {}, SLOT_SECRET: {}, MIGRATE_SECRET: {}, "problems": []}
    if not isinstance(mapping, dict):
        kind = type(mapping).__name__
        result["problems"].append(f"app_database_environment must map database facts to variable names (got {kind})")
        return result
    result["problems"] = _mapping_problems(mapping, facts or {})
    if result["problems"]:
        return result
    for fact, variable in mapping.items():
        result[DATABASE_FACTS[fact]][variable] = str((facts or {})[fact])
    return result


def app_contract_problems(port, health_path, version_path=""):
    """One sentence per field of the smallest contract that a deploy could not use."""
    problems = []
    try:
        port_ok = not isinstance(port, bool) and 1 <= int(port) <= 65535
    except (TypeError, ValueError):
        port_ok = False
    if not port_ok:
        problems.append(f"app_port must be the port the app listens on, 1-65535 (got {port!r})")
    for field, value, required in (("app_health_path", health_path, True), ("app_version_path", version_path, False)):
        if value in (None, "") and not required:
            continue
        if not isinstance(value, str) or not _PATH_RE.match(value):
            problems.append(f"{field} must be a URL path like /health, starting with '/' (got {value!r})")
    return problems


class FilterModule:
    def filters(self):
        return {
            "app_database_environment": app_database_environment,
            "app_contract_problems": app_contract_problems,
        }
