"""Every alert rule, rendered as production and as the lab render it, checked and unit-tested by promtool.

Each case feeds promtool series as a server would expose them (node-exporter's
textfile collector fed by monitoring/textfile.py, the blackbox, node and
mysqld exporters) and says which alerts must fire at a moment, with which
labels and summary, and which must stay silent. promtool's clock starts at 0.
"""

import os
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles/monitoring"
TOOL = ROOT / "scripts/prometheus-tool"
DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
LAB = {**DEFAULTS, "monitoring_alert_for": "1m", "monitoring_site_down_for": "1m", "monitoring_backup_max_age_hours": 1}
H, D = 3600, 86400


def render(variables):
    env = jinja2.Environment(
        variable_start_string="[[",
        variable_end_string="]]",
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML for Prometheus, not HTML
    )
    return env.from_string((ROLE / "templates/alert_rules.yml.j2").read_text()).render(**variables)


def promtool(*args):
    installed = shutil.which("promtool") or (ROOT / ".cache/prometheus-tools/promtool").exists()
    if not installed and not os.environ.get("MONTAIGUILLON_REQUIRE_PROMTOOL"):
        pytest.skip("promtool is not installed here: `make alert-rules` installs and runs it (make lint runs it)")
    return subprocess.run([str(TOOL), "promtool", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(params=[DEFAULTS, LAB], ids=["production", "lab"])
def rules_file(request, tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(render(request.param))
    return path, request.param


def test_the_rendered_rules_pass_promtool_check(rules_file):
    path, _ = rules_file
    run = promtool("check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_rule_has_a_case_here():
    names = {r["alert"] for g in yaml.safe_load(render(DEFAULTS))["groups"] for r in g["rules"]}
    assert names == {case[0] for case in CASES}


def alert(summary, **labels):
    return {"exp_labels": labels, "exp_annotations": {"summary": summary}}


TEXTFILE = "montaiguillon_backup_last_success_timestamp_seconds"
FAILED = "montaiguillon_backup_last_run_failed"
DRILLED = "montaiguillon_drill_due_since_timestamp_seconds"
SITE = 'instance="site.com"'
# (alert, series {selector: values}, eval_time, expected alerts): one firing and one silent case each.
# Samples come every minute and must reach the evaluation time (a series older than 5 min is gone).
CASES = [
    ("MontaiguillonBackupMissed", {f'{TEXTFILE}{{job_name="backup",{SITE}}}': "0x1700"}, "27h",
     [alert("site.com: no successful backup for more than 26 h", severity="critical", job_name="backup",
            instance="site.com")]),
    ("MontaiguillonBackupMissed", {f'{TEXTFILE}{{job_name="backup",{SITE}}}': f"{2 * H}x1700"}, "27h", []),
    ("MontaiguillonBackupFailed", {f'{FAILED}{{job_name="offsite",{SITE}}}': "0 0 1x20"}, "15m",
     [alert("site.com: the last offsite run failed", severity="critical", job_name="offsite",
            instance="site.com")]),
    ("MontaiguillonBackupFailed", {f'{FAILED}{{job_name="backup",{SITE}}}': "0x20"}, "15m", []),
    ("MontaiguillonDrillFailed", {f"montaiguillon_drill_last_passed{{{SITE}}}": "0x20"}, "10m",
     [alert("site.com: the last restore drill failed", severity="critical", instance="site.com")]),
    ("MontaiguillonDrillFailed", {f"montaiguillon_drill_last_passed{{{SITE}}}": "1x20"}, "10m", []),
    # Rendered with monitoring_drill_max_age_days 1 (RULES_VARS): nine days of samples cost promtool 15 s.
    ("MontaiguillonDrillMissed", {f"{DRILLED}{{{SITE}}}": "0x1700"}, "27h",
     [alert("site.com: no successful restore drill for more than 1 days", severity="warning",
            instance="site.com")]),
    ("MontaiguillonDrillMissed", {f"{DRILLED}{{{SITE}}}": f"{4 * H}x1700"}, "27h", []),
    ("MontaiguillonOffsiteStale", {f'{TEXTFILE}{{job_name="offsite",{SITE}}}': "0x1700"}, "27h",
     [alert("site.com: no offsite copy for more than 26 h", severity="critical", job_name="offsite",
            instance="site.com")]),
    ("MontaiguillonOffsiteStale", {f'{TEXTFILE}{{job_name="offsite",{SITE}}}': f"{20 * H}x1700"}, "27h", []),
    ("MontaiguillonBinlogShippingStale", {f'{TEXTFILE}{{job_name="binlogs",{SITE}}}': "0x60"}, "40m",
     [alert("site.com: no binlog shipped for more than 30 min", severity="warning", job_name="binlogs",
            instance="site.com")]),
    ("MontaiguillonBinlogShippingStale", {f'{TEXTFILE}{{job_name="binlogs",{SITE}}}': "0+60x60"}, "40m", []),
    ("MontaiguillonMetricsUnreadable",
     {f'montaiguillon_textfile_source_ok{{source="backup_status",{SITE}}}': "0x20"}, "10m",
     [alert("site.com: the backup_status cannot be read: its alerts are blind", severity="warning",
            source="backup_status", instance="site.com")]),
    ("MontaiguillonMetricsUnreadable",
     {f'montaiguillon_textfile_source_ok{{source="backup_status",{SITE}}}': "1x20"}, "10m", []),
    ("MontaiguillonSiteDown", {'probe_success{instance="https://site.com/"}': "1 1 0x10"}, "6m",
     [alert("https://site.com/ does not answer from outside", severity="critical",
            instance="https://site.com/")]),
    ("MontaiguillonSiteDown", {'probe_success{instance="https://site.com/"}': "1 0 1x10"}, "6m", []),
    ("MontaiguillonSiteSlow", {'probe_duration_seconds{instance="https://site.com/"}': "3x20"}, "10m",
     [alert("https://site.com/ answers in more than 2 s", severity="warning", instance="https://site.com/")]),
    ("MontaiguillonSiteSlow", {'probe_duration_seconds{instance="https://site.com/"}': "0.2x20"}, "10m", []),
    ("MontaiguillonCertificateExpiring",
     {'probe_ssl_earliest_cert_expiry{instance="https://site.com/"}': f"{10 * D}x20"}, "10m",
     [alert("https://site.com/: the certificate expires within 14 days", severity="warning",
            instance="https://site.com/")]),
    ("MontaiguillonCertificateExpiring",
     {'probe_ssl_earliest_cert_expiry{instance="https://site.com/"}': f"{60 * D}x20"}, "10m", []),
    ("MontaiguillonDeployRolledBack",
     {f'montaiguillon_deploys_total{{outcome="rolled_back",{SITE}}}': "2 2 2 3 3 3"}, "4m",
     [alert("site.com: a release failed after its switch and was switched back", severity="warning",
            outcome="rolled_back", instance="site.com")]),
    ("MontaiguillonDeployRolledBack",
     {f'montaiguillon_deploys_total{{outcome="rolled_back",{SITE}}}': "2x90"}, "90m", []),
    ("MontaiguillonDiskFull",
     {f'node_filesystem_avail_bytes{{fstype="ext4",mountpoint="/",{SITE}}}': "10x20",
      f'node_filesystem_size_bytes{{fstype="ext4",mountpoint="/",{SITE}}}': "100x20",
      f'node_filesystem_avail_bytes{{fstype="tmpfs",mountpoint="/run",{SITE}}}': "1x20",
      f'node_filesystem_size_bytes{{fstype="tmpfs",mountpoint="/run",{SITE}}}': "100x20"}, "10m",
     [alert("site.com: / is more than 85 % full", severity="critical", fstype="ext4", mountpoint="/",
            instance="site.com")]),
    ("MontaiguillonDiskFull",
     {f'node_filesystem_avail_bytes{{fstype="ext4",mountpoint="/",{SITE}}}': "40x20",
      f'node_filesystem_size_bytes{{fstype="ext4",mountpoint="/",{SITE}}}': "100x20"}, "10m", []),
    ("MontaiguillonDatabaseDown", {f"mysql_up{{{SITE}}}": "1 0x10"}, "7m",
     [alert("site.com: the database does not answer its exporter", severity="critical",
            instance="site.com")]),
    ("MontaiguillonDatabaseDown", {f"mysql_up{{{SITE}}}": "1x10"}, "7m", []),
    ("MontaiguillonExporterDown", {f'up{{job="nginx",{SITE}}}': "1 0x10", f'up{{job="prometheus",{SITE}}}': "0x10"},
     "7m",
     [alert("site.com: its nginx exporter does not answer (the alerts on its metrics cannot fire)",
            severity="critical", job="nginx", instance="site.com")]),
    ("MontaiguillonExporterDown", {f'up{{job="node",{SITE}}}': "1x10"}, "7m", []),
    ("Watchdog", {}, "1m",
     [alert("Always firing, so that Alertmanager's heartbeat proves the monitoring itself is alive",
            severity="none")]),
]  # fmt: skip


def promtool_tests(cases):
    tests = []
    for name, series, eval_time, expected in cases:
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [{"eval_time": eval_time, "alertname": name, "exp_alerts": expected}],
            }
        )
    return tests


RULES_VARS = {**DEFAULTS, "monitoring_drill_max_age_days": 1}


def test_each_rule_fires_when_it_should_and_only_then(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(render(RULES_VARS))
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                    "tests": promtool_tests(CASES)}))  # fmt: skip
    run = promtool("test", "rules", str(spec))
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_broken_case_is_caught(tmp_path):
    """The harness can fail: a missed backup that is expected to stay silent is reported by promtool."""
    rules = tmp_path / "rules.yml"
    rules.write_text(render(DEFAULTS))
    wrong = [("MontaiguillonBackupMissed", {f'{TEXTFILE}{{job_name="backup",{SITE}}}': "0x1700"}, "27h", [])]
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": promtool_tests(wrong)}))
    run = promtool("test", "rules", str(spec))
    assert run.returncode != 0 and "MontaiguillonBackupMissed" in run.stdout + run.stderr


def test_the_lab_alerts_on_a_missed_backup_within_minutes(tmp_path):
    """The lab's short values: a backup missing for 1 h alerts one minute later."""
    rules = tmp_path / "rules.yml"
    rules.write_text(render(LAB))
    fired = alert("site.com: no successful backup for more than 1 h", severity="critical", job_name="backup",
                  instance="site.com")  # fmt: skip
    cases = [
        ("MontaiguillonBackupMissed", {f'{TEXTFILE}{{job_name="backup",{SITE}}}': "0x90"}, "62m", [fired]),
        ("MontaiguillonBackupMissed", {f'{TEXTFILE}{{job_name="backup",{SITE}}}': "0x90"}, "60m", []),
    ]
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": promtool_tests(cases)}))
    run = promtool("test", "rules", str(spec))
    assert run.returncode == 0, run.stdout + run.stderr
