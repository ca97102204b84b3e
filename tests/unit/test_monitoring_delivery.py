"""Where alerts go: the delivery settings refused when unusable, Alertmanager's configuration checked by amtool."""

import os
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import sourcefile
import yaml

delivery = sourcefile.load("plugins/filter/monitoring_delivery.py", "monitoring_delivery")

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles/monitoring"
DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
HOOK = {"name": "ops", "url": "https://hooks.example.net/alerts"}
EMAIL = {"smtp_host": "smtp.example.net", "from": "alerts@site.com", "to": ["ops@site.com", "owner@site.com"]}


def problems(**settings):
    return delivery.monitoring_delivery_problems({**DEFAULTS, **settings})


@pytest.mark.parametrize(
    "settings",
    [
        {"monitoring_alert_webhooks": [HOOK]},
        {"monitoring_alert_email": EMAIL},
        {"monitoring_alert_email": {**EMAIL, "to": "ops@site.com", "username": "alerts", "password": "s3cret"}},
        {"monitoring_alert_webhooks": [HOOK], "monitoring_heartbeat_url": "https://hc.example.net/ping/abc"},
        {
            "monitoring_alert_webhooks": [{"name": "lab", "url": "http://receiver:8080/"}],
            "monitoring_alert_insecure_urls": ["http://receiver:8080/"],
        },
        {"monitoring_require_receiver": False},
    ],
)
def test_usable_settings_have_no_problem(settings):
    assert problems(**settings) == []


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"monitoring_alert_webhooks": [{"name": "ops", "url": "http://hooks.example.net/"}]},
         "monitoring_alert_webhooks[0].url: 'http://hooks.example.net/' is not https"),
        ({"monitoring_alert_webhooks": [{"name": "Ops!", "url": HOOK["url"]}]},
         "monitoring_alert_webhooks[0].name: 'Ops!' is not a receiver name"),
        ({"monitoring_alert_webhooks": [HOOK, HOOK]}, "monitoring_alert_webhooks[1].name: 'ops' is used twice"),
        ({"monitoring_alert_webhooks": [{"name": "ops"}]}, "monitoring_alert_webhooks[0].url: a URL is required"),
        ({"monitoring_alert_email": {"smtp_host": "smtp.example.net"}},
         "monitoring_alert_email is half filled: monitoring_alert_email.from, monitoring_alert_email.to missing"),
        ({"monitoring_alert_email": {**EMAIL, "to": ["ops"]}}, "'ops' is not an e-mail address"),
        ({"monitoring_alert_email": {**EMAIL, "username": "alerts"}}, "username and password go together"),
        ({"monitoring_alert_email": {**EMAIL, "smtp_port": 0}}, "monitoring_alert_email.smtp_port: 0 is not a port"),
        ({"monitoring_alert_email": {**EMAIL, "smtp_hots": "x"}}, "monitoring_alert_email.smtp_hots: unknown setting"),
        ({"monitoring_alert_webhooks": [HOOK], "monitoring_heartbeat_url": "http://hc.example.net/ping"},
         "monitoring_heartbeat_url: 'http://hc.example.net/ping' is not https"),
        ({}, "no alert receiver: set monitoring_alert_webhooks or monitoring_alert_email"),
    ],
)  # fmt: skip
def test_unusable_settings_are_named(settings, named):
    found = problems(**settings)
    assert any(named in problem for problem in found), found


def test_a_problem_never_shows_the_smtp_password():
    found = problems(monitoring_alert_email={**EMAIL, "smtp_port": "x", "password": "s3cret-pw"})
    assert found and "s3cret-pw" not in " ".join(found)


def render(settings):
    env = jinja2.Environment(
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML for Alertmanager, not HTML
    )
    return env.from_string((ROLE / "templates/alertmanager.yml.j2").read_text()).render(**{**DEFAULTS, **settings})


def amtool(path):
    installed = shutil.which("amtool") or (ROOT / ".cache/prometheus-tools/amtool").exists()
    if not installed and not os.environ.get("MONTAIGUILLON_REQUIRE_PROMTOOL"):
        pytest.skip("amtool is not installed here: `make alert-rules` installs and runs it (make lint runs it)")
    tool = ROOT / "scripts/prometheus-tool"
    return subprocess.run([str(tool), "amtool", "check-config", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "settings",
    [
        {"monitoring_alert_webhooks": [HOOK], "monitoring_heartbeat_url": "https://hc.example.net/ping/abc"},
        {"monitoring_alert_email": {**EMAIL, "username": "alerts", "password": "s3cret", "smtp_port": 465}},
        {"monitoring_alert_webhooks": [HOOK], "monitoring_alert_email": {**EMAIL, "to": "ops@site.com"}},
    ],
    ids=["webhook-and-heartbeat", "email", "both"],
)
def test_alertmanager_accepts_the_configuration(settings, tmp_path):
    text = render(settings)
    config = yaml.safe_load(text)
    team = next(r for r in config["receivers"] if r["name"] == "team")
    heartbeat = next(r for r in config["receivers"] if r["name"] == "heartbeat")
    hooks = [hook["url"] for hook in team.get("webhook_configs", [])]
    assert hooks == [h["url"] for h in settings.get("monitoring_alert_webhooks", [])]
    mails = [mail["to"] for mail in team.get("email_configs", [])]
    to = settings.get("monitoring_alert_email", {}).get("to", [])
    assert mails == ([to] if isinstance(to, str) else to)
    # The Watchdog goes to the heartbeat, every minute; nothing else does.
    assert config["route"]["routes"][0]["receiver"] == "heartbeat"
    assert config["route"]["routes"][0]["repeat_interval"] == "1m"
    if settings.get("monitoring_heartbeat_url"):
        assert heartbeat["webhook_configs"][0]["url"] == settings["monitoring_heartbeat_url"]
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    run = amtool(path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_amtool_refuses_a_broken_configuration(tmp_path):
    """The check can fail: a repeat interval Alertmanager cannot parse is refused."""
    path = tmp_path / "alertmanager.yml"
    path.write_text(render({"monitoring_alert_webhooks": [HOOK], "monitoring_alert_repeat_interval": "forever"}))
    run = amtool(path)
    assert run.returncode != 0 and "forever" in run.stdout + run.stderr
