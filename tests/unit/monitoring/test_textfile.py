"""The textfile collector turns the backup status file and the release ledger into node-exporter metrics."""

import json
import os
import stat

from ansible.module_utils.montaiguillon.monitoring import textfile

STATUS = {
    "host": "site.com",
    "updated_at": "2026-12-01T03:10:00Z",
    "backup": {
        "last_attempt": "2026-12-01T03:00:00Z",
        "last_result": "ok",
        "last_success": "2026-12-01T03:00:00Z",
        "last_duration_seconds": 12.5,
        "consecutive_failures": 0,
        "details": {"bytes": 2048, "label": "nightly"},
    },
    "drill": {
        "last_attempt": "2026-12-01T04:00:00Z",
        "last_result": "failed",
        "last_error": "restore failed",
        "last_success": None,
        "consecutive_failures": 2,
    },
}
LEDGER = [
    {
        "release": "r1",
        "version": "1.0.0",
        "outcome": "success",
        "duration_seconds": 30,
        "finished_at": "2026-11-30T10:00:00Z",
    },
    {
        "release": "r2",
        "version": "1.1.0",
        "outcome": "rolled_back",
        "duration_seconds": 40,
        "finished_at": "2026-12-01T10:00:00Z",
    },
]


def _write(tmp_path, ledger_lines):
    status = tmp_path / "status.json"
    status.write_text(json.dumps(STATUS))
    ledger = tmp_path / "releases.jsonl"
    ledger.write_text("\n".join(ledger_lines) + "\n")
    return status, ledger


def test_metrics_from_sample_files(tmp_path):
    status, ledger = _write(tmp_path, [json.dumps(e) for e in LEDGER] + ["not json"])
    out = tmp_path / "montaiguillon.prom"
    assert textfile.main(["--status-file", str(status), "--ledger", str(ledger), "--output", str(out)]) == 0
    text = out.read_text()
    assert 'montaiguillon_backup_last_success_timestamp_seconds{job_name="backup"} 1796094000.0' in text
    assert 'montaiguillon_backup_last_run_failed{job_name="drill"} 1' in text
    assert 'montaiguillon_backup_last_success_timestamp_seconds{job_name="drill"} 0' in text
    assert 'montaiguillon_backup_detail{job_name="backup",key="bytes"} 2048' in text
    assert "label" not in text  # non-numeric details are not metrics
    assert 'montaiguillon_deploys_total{outcome="rolled_back"} 1' in text
    assert 'montaiguillon_release_live_info{release="r1",version="1.0.0"} 1' in text
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_sources_are_reported_not_fatal(tmp_path):
    out = tmp_path / "m.prom"
    assert (
        textfile.main(["--status-file", str(tmp_path / "no"), "--ledger", str(tmp_path / "no"), "--output", str(out)])
        == 0
    )
    text = out.read_text()
    assert 'montaiguillon_textfile_source_ok{source="backup_status"} 0' in text
    assert 'montaiguillon_deploys_total{outcome="success"} 0' in text


def test_output_must_be_a_prom_file(tmp_path, capsys):
    try:
        textfile.main(["--output", str(tmp_path / "m.txt")])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--output must end with .prom" in capsys.readouterr().err
