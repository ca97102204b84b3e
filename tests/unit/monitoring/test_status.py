"""The status page: what a person reading it (HTML) or running ``make status`` (text) sees of one server."""

import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from ansible.module_utils.montaiguillon.monitoring import render, status, textfile

NOW = textfile.parse_iso("2026-12-04T16:33:00Z")  # three hours after the live release went live
EVIL = "<script>alert(1)</script>"
LIVE = {
    "colour": "blue",
    "config": "sha256:fd88a1",
    "duration_seconds": 8.869,
    "env": {"WP_ENV": "test"},
    "finished_at": "2026-12-04T13:33:00Z",
    "image": "lab-registry:5000/montaiguillon/site@sha256:c4b0dd9f1e2a3b4c5d6e7f8091a2b3c4d5e6f708",
    "message": "blue is live with release 20261204T133251Z-91c922a3 (version f9bb935)",
    "outcome": "success",
    "previous_release": "20261203T100000Z-0a1b2c3d",
    "release": "20261204T133251Z-91c922a3",
    "revision": "f9bb935384e6",
    "started_at": "2026-12-04T13:32:51Z",
    "switch_seconds": 0.399,
    "version": "f9bb935",
}
EARLIER = [
    {**LIVE, "release": "20261203T100000Z-0a1b2c3d", "version": "0a1b2c3", "finished_at": "2026-12-03T10:00:20Z",
     "duration_seconds": 20.1, "previous_release": None},
    {**LIVE, "release": "20261203T120000Z-deadbeef", "version": "deadbee", "finished_at": "2026-12-03T12:01:00Z",
     "outcome": "rolled_back", "duration_seconds": 45.0},
    {**LIVE, "release": "20261204T090000Z-badc0ffe", "version": "badc0ff", "finished_at": "2026-12-04T09:00:30Z",
     "outcome": "failed", "duration_seconds": 30.2, "switch_seconds": None},
]  # fmt: skip
STATUS = {
    "backup": {
        "last_attempt": "2026-12-04T13:32:13Z",
        "last_result": "ok",
        "last_error": None,
        "last_duration_seconds": 0.467,
        "last_success": "2026-12-04T13:32:13Z",
        "details": {"id": "20261204T133213Z-scheduled", "compressed_bytes": 1147, "rows": 12, "tables": 3},
        "consecutive_failures": 0,
    },
    "binlogs": {
        "last_attempt": "2026-12-04T16:30:00Z",
        "last_result": "failed",
        "last_error": "mysqlbinlog exited 1: Access denied for user 'backup'@'localhost'",
        "last_duration_seconds": 0.2,
        "last_success": "2026-12-04T16:00:00Z",
        "consecutive_failures": 1,
    },
    "offsite": {
        "last_attempt": "2026-12-04T13:32:20Z",
        "last_result": "ok",
        "last_error": None,
        "last_success": "2026-12-04T13:32:20Z",
        "consecutive_failures": 0,
    },
    "host": "site.com",
    "updated_at": "2026-12-04T16:30:01Z",
}
BACKUPS = {
    "20261203T030000Z-scheduled.json": {"id": "20261203T030000Z-scheduled", "kind": "scheduled", "status": "complete",
                                        "finished_at": "2026-12-03T03:00:04Z", "compressed_bytes": 1024},
    "20261204T133213Z-scheduled.json": {"id": "20261204T133213Z-scheduled", "kind": "scheduled", "status": "complete",
                                        "finished_at": "2026-12-04T13:32:14Z", "compressed_bytes": 1147},
    "20261204T133250Z-pre-deploy.json": {"id": "20261204T133250Z-pre-deploy", "kind": "pre-deploy",
                                         "status": "complete", "finished_at": "2026-12-04T13:32:51Z",
                                         "compressed_bytes": 3 * 1024 * 1024},
    "20261204T150000Z-manual.json": {"id": "20261204T150000Z-manual", "kind": "manual", "status": "failed",
                                     "finished_at": "2026-12-04T15:00:03Z", "compressed_bytes": 99},
    "20261203T030000Z-scheduled.drill.json": {"id": "20261203T030000Z-scheduled", "status": "passed",
                                              "started_at": "2026-12-03T04:45:00Z",
                                              "finished_at": "2026-12-03T04:45:40Z", "restore_seconds": 31.5},
    "20261204T133213Z-scheduled.drill.json": {"id": "20261204T133213Z-scheduled", "status": "failed",
                                              "started_at": "2026-12-04T14:00:00Z",
                                              "finished_at": "2026-12-04T14:00:20Z", "restore_seconds": 12.0},
}  # fmt: skip
# A self-signed certificate whose notAfter is 2026-12-09 12:00:00 GMT.
CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIBFDCBu6ADAgECAgEBMAoGCCqGSM49BAMCMBQxEjAQBgNVBAMMCXNpdGUudGVz
dDAeFw0yNjEyMDEwMDAwMDBaFw0yNjEyMDkxMjAwMDBaMBQxEjAQBgNVBAMMCXNp
dGUudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABG+N2nkPhL35556nKGmd
UgD5+lUmIYqqZpbmLzABPoUtcwSWrIt2g+l3+PUyvRVKr9FLWW/hYNGwDw5URKJp
+vYwCgYIKoZIzj0EAwIDSAAwRQIgfSvxGlHam8SnhNomCklmtdGhuuAWNyDR6Mrg
hk7Js1cCIQDI6qC6d7vSTNBRQH78vdPqmmovWFjCZ7F4xxz07q/Hsg==
-----END CERTIFICATE-----
"""
NOT_AFTER = textfile.parse_iso("2026-12-09T12:00:00Z")
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "embed", "source", "track", "wbr"}


class Page(HTMLParser):
    """The page parsed: every element (tag, attributes, its text, the ids around it); unclosed tags are errors."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.stack, self.elements, self.errors = [], [], []
        self.feed(text)
        self.close()
        self.errors += [f"<{e['tag']}> never closed" for e in self.stack]

    def _element(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "inside": {e["attrs"].get("id") for e in self.stack}}
        self.elements.append(element)
        return element

    def handle_starttag(self, tag, attrs):
        element = self._element(tag, attrs)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self._element(tag, attrs)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1]["tag"] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1]['tag'] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        for element in self.stack:
            element["text"] += data

    def text(self, element_id):
        matches = [e for e in self.elements if e["attrs"].get("id") == element_id]
        assert len(matches) == 1, f"{len(matches)} elements with id {element_id!r}"
        return matches[0]["text"]

    def find(self, tag, inside, css_class=None):
        return [
            e
            for e in self.elements
            if e["tag"] == tag
            and inside in e["inside"]
            and (css_class is None or css_class in e["attrs"].get("class", "").split())
        ]


@pytest.fixture
def server(tmp_path):
    """One server's files: the backup status, the release ledger, the backup directory."""
    backups = tmp_path / "backups"
    backups.mkdir()
    for name, document in BACKUPS.items():
        (backups / name).write_text(json.dumps(document))
    (backups / "20261204T133213Z-scheduled.sql.zst.age").write_bytes(b"x" * 1147)
    files = SimpleNamespace(
        status=tmp_path / "status.json", ledger=tmp_path / "releases.jsonl", backups=backups, root=tmp_path
    )
    files.status.write_text(json.dumps(STATUS))
    write_ledger(files, [*EARLIER, LIVE])
    return files


def write_ledger(files, entries, extra_lines=()):
    files.ledger.write_text("\n".join([*(json.dumps(e) for e in entries), *extra_lines]) + "\n")


def arguments(files, *extra):
    return [
        "--status-file", str(files.status), "--ledger", str(files.ledger), "--backup-dir", str(files.backups),
        "--environment", "test", "--host", "site.com", "--disk", str(files.root), *extra,
    ]  # fmt: skip


def page(files, *extra, now=NOW):
    """Run the generator as cron does (``--html``) and parse what it wrote."""
    out = files.root / "status.html"
    assert status.main([*arguments(files, *extra), "--html", str(out)], now=now) == 0
    text = out.read_text(encoding="utf-8")
    parsed = Page(text)
    assert parsed.errors == []
    return text, parsed


def test_the_page_shows_the_live_release_and_the_newest_backup(server):
    text, parsed = page(server)
    assert parsed.text("live-version") == "f9bb935"
    assert parsed.text("live-release") == "20261204T133251Z-91c922a3"
    assert parsed.text("live-image") == "site@sha256:c4b0dd9f1e2a"
    assert parsed.text("live-since") == "2026-12-04 13:33 UTC (3 h ago)"
    assert parsed.text("latest-backup") == "20261204T133250Z-pre-deploy (3 h ago)"
    assert "<title>test — site.com</title>" in text
    assert '<meta name="generator" content="montaiguillon status.py">' in text
    assert parsed.text("generated-at") == "generated 2026-12-04 16:33 UTC"
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external asset
    out = server.root / "status.html"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    assert [p.name for p in server.root.iterdir() if p.name.startswith(".")] == []


def test_the_deploy_chart_has_one_bar_per_deploy_coloured_by_outcome(server):
    _text, parsed = page(server)
    bars = parsed.find("rect", inside="deploys", css_class="bar")
    assert [b["attrs"]["class"] for b in bars] == ["bar ok", "bar warn", "bar bad", "bar ok"]  # oldest first
    heights = [float(b["attrs"]["height"]) for b in bars]
    assert heights.index(max(heights)) == 1  # the 45 s rolled-back deploy is the tallest
    rows = parsed.find("tr", inside="deploys-table")
    assert [r["text"].split(" UTC")[0] for r in rows[1:]] == [
        "2026-12-04 13:33", "2026-12-04 09:00", "2026-12-03 12:01", "2026-12-03 10:00"
    ]  # fmt: skip


def test_the_tables_keep_the_last_ten_and_the_chart_the_last_thirty_deploys(server):
    entries = [{**LIVE, "release": f"r{i}", "finished_at": f"2026-11-{i % 28 + 1:02d}T10:00:00Z"} for i in range(35)]
    write_ledger(server, entries)
    _text, parsed = page(server)
    assert len(parsed.find("rect", inside="deploys", css_class="bar")) == 30
    assert len(parsed.find("tr", inside="deploys-table")) == 1 + 10


def test_the_backups_list_only_complete_backups_newest_first_with_a_size_chart(server):
    _text, parsed = page(server)
    rows = [r["text"] for r in parsed.find("tr", inside="backups-table")][1:]
    assert rows == [
        "20261204T133250Z-pre-deploypre-deploy3.0 MiB3 h ago",
        "20261204T133213Z-scheduledscheduled1.1 KiB3 h ago",
        "20261203T030000Z-scheduledscheduled1.0 KiB37 h ago",
    ]
    assert len(parsed.find("circle", inside="backups", css_class="point")) == 3


def test_the_backup_badge_turns_red_when_the_newest_backup_is_too_old(server):
    _text, parsed = page(server, now=NOW + 30 * 3600)
    latest = [e for e in parsed.elements if "latest-backup" in e["inside"] and e["tag"] == "span"]
    assert latest[0]["attrs"]["class"] == "badge bad"


def test_values_from_files_are_escaped(server):
    entries = [{**LIVE, "version": EVIL, "release": f"r-{EVIL}", "image": f"x@sha256:{EVIL}"}]
    write_ledger(server, entries)
    server.status.write_text(json.dumps({**STATUS, "binlogs": {**STATUS["binlogs"], "last_error": EVIL}}))
    (server.backups / "20261205T000000Z-manual.json").write_text(
        json.dumps({"id": EVIL, "kind": EVIL, "status": "complete", "finished_at": "2026-12-04T16:00:00Z"})
    )
    text, parsed = page(server)
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert [e for e in parsed.elements if e["tag"] == "script"] == []
    assert parsed.text("live-version") == EVIL  # shown as text, exactly
    assert EVIL in parsed.text("job-binlogs")


def test_a_missing_ledger_gives_no_data_and_the_rest_of_the_page(server):
    server.ledger.unlink()
    _text, parsed = page(server)
    sections = {e["attrs"]["id"]: e["text"] for e in parsed.elements if e["tag"] == "section"}
    assert "no data: the release ledger cannot be read" in sections["live"]
    assert "no data: the release ledger cannot be read" in sections["deploys"]
    assert parsed.find("rect", inside="deploys") == []
    assert parsed.text("latest-backup").startswith("20261204T133250Z-pre-deploy")


def test_no_source_at_all_still_gives_a_page(tmp_path):
    files = SimpleNamespace(
        status=tmp_path / "no-status.json", ledger=tmp_path / "no.jsonl", backups=tmp_path / "no-dir", root=tmp_path
    )
    _text, parsed = page(files)
    sections = {e["attrs"]["id"]: e["text"] for e in parsed.elements if e["tag"] == "section"}
    for key in ("live", "deploys", "backups", "jobs", "drill"):
        assert "no data" in sections[key], key
    assert "not checked" in sections["certificate"]


def test_unreadable_ledger_lines_are_skipped(server):
    odd = ['{"outcome": "success"}', '{"outcome": ["success"], "release": "r9"}', '{"outcome": "unknown"}']
    write_ledger(server, [LIVE], extra_lines=["not json", "[1, 2]", *odd])
    _text, parsed = page(server)
    assert parsed.text("live-version") == "f9bb935"
    assert len(parsed.find("rect", inside="deploys", css_class="bar")) == 1


def test_the_failed_binlogs_job_shows_failed_with_its_error(server):
    _text, parsed = page(server)
    assert parsed.text("job-binlogs") == (
        "binlogsfailed33 min ago1mysqlbinlog exited 1: Access denied for user 'backup'@'localhost'"
    )
    badge = [e for e in parsed.elements if "job-binlogs" in e["inside"] and e["tag"] == "span"]
    assert badge[0]["attrs"]["class"] == "badge bad"
    assert [e["attrs"]["id"] for e in parsed.find("tr", inside="jobs-table") if "id" in e["attrs"]] == [
        "job-backup", "job-binlogs", "job-offsite"
    ]  # fmt: skip


def test_the_last_drill_and_its_rto_chart(server):
    _text, parsed = page(server)
    assert parsed.text("drill-passed") == "failed"
    assert parsed.text("drill-rto") == "12.0 s"
    assert parsed.text("drill-backup") == "20261204T133213Z-scheduled"
    points = parsed.find("circle", inside="drill", css_class="point")
    assert [p["attrs"]["class"] for p in points] == ["point ok", "point bad"]
    assert float(points[0]["attrs"]["cy"]) < float(points[1]["attrs"]["cy"])  # 31.5 s drawn higher than 12 s


@pytest.mark.parametrize(
    ("days_left", "shown", "level"),
    [(5, "in 5 days (2026-12-09 12:00 UTC)", "bad"), (20, "in 20 days (2026-12-09 12:00 UTC)", "ok")],
)
def test_a_certificate_expiring_soon_is_flagged(server, days_left, shown, level):
    certificate = server.root / "fullchain.pem"
    certificate.write_text(CERTIFICATE)
    _text, parsed = page(server, "--certificate", str(certificate), now=NOT_AFTER - days_left * 86400 - 3600)
    assert parsed.text("certificate-expiry") == shown
    badge = [e for e in parsed.elements if "certificate-expiry" in e["inside"] and e["tag"] == "span"]
    assert badge[0]["attrs"]["class"] == f"badge {level}"


def test_a_missing_certificate_is_unknown(server):
    _text, parsed = page(server, "--certificate", str(server.root / "missing.pem"))
    assert parsed.text("certificate-expiry") == "unknown"


def test_disks_over_the_limit_are_red_and_unreadable_ones_unknown(server, monkeypatch):
    real = os.statvfs
    full = SimpleNamespace(f_blocks=1000, f_frsize=4096, f_bavail=100)  # 90 % used

    def statvfs(path):
        return full if path == "/data" else real(path)

    monkeypatch.setattr(status.os, "statvfs", statvfs)
    _text, parsed = page(server, "--disk", "/data", "--disk", str(server.root / "missing"))
    assert parsed.text("disk-1") == "90 % used, 400.0 KiB free"
    assert parsed.find("span", inside="disk-1", css_class="bad")
    assert re.fullmatch(r"\d+ % used, [\d.]+ [KMG]?i?B free", parsed.text("disk-0"))  # the temporary directory
    assert parsed.text("disk-2") == "unknown"


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if self.path == "/down" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def site(http_server):
    return http_server(Health)


def test_the_site_health_is_ok_or_failed_with_its_http_status(server, site):
    _text, parsed = page(server, "--health-url", f"{site}/up")
    assert parsed.text("live-health") == "ok (HTTP 200)"
    _text, parsed = page(server, "--health-url", f"{site}/down")
    assert parsed.text("live-health") == "failed (HTTP 503)"
    assert parsed.find("span", inside="live-health", css_class="bad")


def test_an_unreachable_site_is_failed_not_a_crash(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _text, parsed = page(server, "--health-url", f"http://127.0.0.1:{port}/up")
    assert parsed.text("live-health").startswith("failed: ")
    assert "Connection refused" in parsed.text("live-health")


def test_text_lists_the_live_release_and_the_latest_backup(server, capsys):
    assert status.main([*arguments(server), "--text"], now=NOW) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "test — site.com  (generated 2026-12-04 16:33 UTC)"
    assert "  Version  f9bb935" in lines
    assert "  Release  20261204T133251Z-91c922a3" in lines
    assert "  Latest  20261204T133250Z-pre-deploy (3 h ago)" in lines
    binlogs = next(line for line in lines if line.startswith("  binlogs"))
    assert binlogs.split()[:2] == ["binlogs", "failed"]
    assert binlogs.endswith("Access denied for user 'backup'@'localhost'")
    assert "\033[" not in out  # not a terminal: no colours
    assert not (server.root / "status.html").exists()


def test_text_colours_only_for_a_terminal_and_never_passes_escape_sequences_through(server):
    sections = [status.jobs_section({"binlogs": {"last_result": "failed", "last_error": "\033[2Jgone"}}, NOW)]
    coloured = render.text_page(sections, "test — site.com", ("", "now"), colour=True)
    assert "\033[31mfailed" in coloured
    assert "?[2Jgone" in coloured and "\033[2J" not in coloured
    assert "\033[" not in render.text_page(sections, "t", ("", "now"), colour=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--environment", "staging", "--text"], "invalid choice: 'staging'"),
        (["--environment", "test"], "nothing to do: give --html OUT, --text or both"),
        (["--environment", "test", "--text", "--health-url", "ftp://site/up"], "must be an http:// or https:// URL"),
        (["--environment", "test", "--text", "--disk-max-percent", "lots"], "invalid float value: 'lots'"),
    ],
)
def test_a_bad_argument_exits_2_with_a_message(extra, message, capsys):
    with pytest.raises(SystemExit) as exc:
        status.main(extra, now=NOW)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_page_exits_1_and_says_where(server, capsys):
    out = server.root / "missing-dir" / "status.html"
    assert status.main([*arguments(server), "--html", str(out)], now=NOW) == 1
    assert f"cannot write {out}" in capsys.readouterr().err


def test_it_runs_as_a_script_beside_its_siblings_like_on_a_server(server, tmp_path):
    """Installed alone with ``python3 -I`` (no script directory on sys.path), it still finds textfile.py."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for module in (status, textfile, render, status.charts, status.units):  # what roles/monitoring installs
        shutil.copy(module.__file__, lib)
    command = [sys.executable, "-I", str(lib / "status.py"), *arguments(server), "--text"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")
    assert done.returncode == 0, done.stderr
    assert "  Version  f9bb935" in done.stdout.splitlines()
    assert sorted(p.name for p in lib.iterdir()) == ["charts.py", "render.py", "status.py", "textfile.py", "units.py"]


def test_only_the_server_s_own_proxy_on_loopback_is_checked_without_verifying_its_certificate():
    import ssl

    assert status.tls_context("https://127.0.0.1:443/").verify_mode == ssl.CERT_NONE  # the cert names the site
    remote = status.tls_context("https://site.com/")
    assert remote.verify_mode == ssl.CERT_REQUIRED and remote.check_hostname
    assert status.tls_context("http://127.0.0.1/") is None
