"""Where alerts go: webhooks, e-mail and the heartbeat, checked before Alertmanager's configuration is written.

An alert that cannot be delivered is worse than none (everyone believes they
would hear): a webhook must be HTTPS (plain HTTP only for URLs listed, by
name, in ``monitoring_alert_insecure_urls``, the lab's own receiver), an
e-mail setting is complete or absent, and production has at least one
receiver. Every problem names the variable.
"""

import re
from urllib.parse import urlsplit

DOCUMENTATION = r"""
name: monitoring_delivery_problems
short_description: Check the monitoring role's alert delivery settings
description:
  - Returns one sentence per problem in the webhooks, the e-mail settings and the heartbeat URL,
    each naming the variable; an empty list when they can be used.
positional: _input
options:
  _input:
    description: The monitoring role's variables (monitoring_alert_webhooks, monitoring_alert_email, ...).
    type: dict
    required: true
"""

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ADDRESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
EMAIL_REQUIRED = ("smtp_host", "from", "to")
EMAIL_KNOWN = (*EMAIL_REQUIRED, "smtp_port", "username", "password", "require_tls")


def _url_problem(variable, url, insecure):
    """Why ``url`` cannot carry alerts, or ''."""
    if not isinstance(url, str) or not url:
        return f"{variable}: a URL is required"
    parts = urlsplit(url)
    if parts.scheme == "http" and url in insecure:
        return ""
    if parts.scheme != "https":
        return (
            f"{variable}: {url!r} is not https (alerts would cross the network in clear); "
            "list it in monitoring_alert_insecure_urls only if it is a receiver on a private network"
        )
    if not parts.hostname:
        return f"{variable}: {url!r} has no host"
    return ""


def _webhook_problems(webhooks, insecure):
    if not isinstance(webhooks, list):
        return ["monitoring_alert_webhooks must be a list of {name, url}"]
    problems, seen = [], set()
    for index, hook in enumerate(webhooks):
        where = f"monitoring_alert_webhooks[{index}]"
        if not isinstance(hook, dict):
            problems.append(f"{where} must be a mapping with name and url")
            continue
        name = hook.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            problems.append(f"{where}.name: {name!r} is not a receiver name (lowercase letters, digits, - and _)")
        elif name in seen:
            problems.append(f"{where}.name: {name!r} is used twice")
        seen.add(name)
        problem = _url_problem(f"{where}.url", hook.get("url"), insecure)
        if problem:
            problems.append(problem)
    return problems


def _email_problems(email):
    if email in (None, {}):
        return []
    if not isinstance(email, dict):
        return ["monitoring_alert_email must be a mapping (smtp_host, from, to, ...) or {}"]
    problems = [f"monitoring_alert_email.{key}: unknown setting" for key in email if key not in EMAIL_KNOWN]
    missing = [key for key in EMAIL_REQUIRED if not email.get(key)]
    if missing:
        problems.append(
            "monitoring_alert_email is half filled: "
            + ", ".join(f"monitoring_alert_email.{k}" for k in missing)
            + " missing (set all of smtp_host, from and to, or leave monitoring_alert_email empty)"
        )
    recipients = email.get("to") or []
    recipients = [recipients] if isinstance(recipients, str) else recipients
    for address in [email.get("from"), *recipients]:
        if address and not (isinstance(address, str) and _ADDRESS_RE.match(address)):
            problems.append(f"monitoring_alert_email: {address!r} is not an e-mail address")
    port = email.get("smtp_port", 587)
    if isinstance(port, bool) or not str(port).isdigit() or not 1 <= int(port) <= 65535:
        problems.append(f"monitoring_alert_email.smtp_port: {port!r} is not a port (1-65535)")
    if bool(email.get("username")) != bool(email.get("password")):
        problems.append("monitoring_alert_email: username and password go together (both or neither)")
    return problems


def monitoring_delivery_problems(settings):
    """One sentence per problem in the alert delivery settings (the role's variables, by name)."""
    insecure = settings.get("monitoring_alert_insecure_urls") or []
    problems = _webhook_problems(settings.get("monitoring_alert_webhooks") or [], insecure)
    problems += _email_problems(settings.get("monitoring_alert_email"))
    heartbeat = settings.get("monitoring_heartbeat_url") or ""
    if heartbeat:
        problem = _url_problem("monitoring_heartbeat_url", heartbeat, insecure)
        if problem:
            problems.append(problem)
    has_receiver = bool(settings.get("monitoring_alert_webhooks")) or bool(settings.get("monitoring_alert_email"))
    if settings.get("monitoring_require_receiver", True) and not has_receiver:
        problems.append(
            "no alert receiver: set monitoring_alert_webhooks or monitoring_alert_email "
            "(or monitoring_require_receiver: false where nobody is to be told)"
        )
    return problems


class FilterModule:
    def filters(self):
        return {"monitoring_delivery_problems": monitoring_delivery_problems}
