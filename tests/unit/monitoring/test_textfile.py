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


def _catalog(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    documents = {
        "20261201T030000Z-scheduled.json": {"kind": "scheduled", "status": "complete",
                                            "finished_at": "2026-12-01T03:00:05Z", "compressed_bytes": 4096},
        "20261130T030000Z-scheduled.json": {"kind": "scheduled", "status": "complete",
                                            "finished_at": "2026-11-30T03:00:05Z", "compressed_bytes": 1024},
        "20261201T090000Z-pre-deploy.json": {"kind": "pre-deploy", "status": "complete",
                                             "finished_at": "2026-12-01T09:00:02Z", "compressed_bytes": 4100},
        "20261201T100000Z-manual.json": {"kind": "manual", "status": "partial", "finished_at": None},
        "20261130T030000Z-scheduled.drill.json": {"status": "passed", "finished_at": "2026-11-30T04:45:40Z",
                                                  "restore_seconds": 31.5},
        "20261201T030000Z-scheduled.drill.json": {"status": "failed", "finished_at": "2026-12-01T04:45:20Z",
                                                  "restore_seconds": 12.0},
    }  # fmt: skip
    for name, document in documents.items():
        (backups / name).write_text(json.dumps(document))
    (backups / "20261201T030000Z-scheduled.sql.zst.age").write_bytes(b"ciphertext")
    return backups


def test_the_catalogue_gives_each_kind_its_newest_backup_and_the_drills(tmp_path):
    """Drills run from the controller leave no trace in the status file: their records are read."""
    status, ledger = _write(tmp_path, [json.dumps(e) for e in LEDGER])
    out = tmp_path / "m.prom"
    args = ["--status-file", str(status), "--ledger", str(ledger), "--backup-dir", str(_catalog(tmp_path))]
    assert textfile.main([*args, "--output", str(out)]) == 0
    text = out.read_text()
    assert 'montaiguillon_textfile_source_ok{source="backup_catalog"} 1' in text
    assert 'montaiguillon_backup_kind_last_timestamp_seconds{kind="scheduled"} 1796094005.0' in text
    assert 'montaiguillon_backup_kind_last_size_bytes{kind="scheduled"} 4096' in text
    assert 'montaiguillon_backup_kind_count{kind="scheduled"} 2' in text
    assert 'montaiguillon_backup_kind_count{kind="pre-deploy"} 1' in text
    assert 'kind="manual"' not in text  # a partial backup is no backup
    assert "montaiguillon_drill_last_passed 0" in text  # the newest drill failed
    assert "montaiguillon_drill_last_restore_seconds 12.0" in text
    assert "montaiguillon_drill_last_success_timestamp_seconds 1796013940.0" in text  # the one before passed
    assert "montaiguillon_drill_due_since_timestamp_seconds 1796013940.0" in text


def test_a_server_never_drilled_is_due_since_its_oldest_backup(tmp_path):
    """Not overdue on its first day (no alert), overdue once its oldest backup is older than the drill age."""
    backups = _catalog(tmp_path)
    for record in backups.glob("*.drill.json"):
        record.unlink()
    samples = textfile.catalog_metrics(textfile.read_catalog(str(backups)))
    assert ("montaiguillon_drill_last_success_timestamp_seconds", {}, 0) in samples
    assert ("montaiguillon_drill_due_since_timestamp_seconds", {}, 1796007605.0) in samples  # 2026-11-30T03:00:05Z


def test_missing_sources_are_reported_not_fatal(tmp_path):
    out, missing = tmp_path / "m.prom", str(tmp_path / "no")
    args = ["--status-file", missing, "--ledger", missing, "--backup-dir", missing, "--output", str(out)]
    assert textfile.main(args) == 0
    text = out.read_text()
    assert 'montaiguillon_textfile_source_ok{source="backup_status"} 0' in text
    assert 'montaiguillon_deploys_total{outcome="success"} 0' in text
    assert "montaiguillon_drill_due_since_timestamp_seconds" not in text  # nothing to drill known
    assert 'montaiguillon_textfile_source_ok{source="backup_catalog"} 0' in text  # which alerts instead


def test_output_must_be_a_prom_file(tmp_path, capsys):
    try:
        textfile.main(["--output", str(tmp_path / "m.txt")])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--output must end with .prom" in capsys.readouterr().err
