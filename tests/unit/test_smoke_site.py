"""scripts/smoke-site against a stand-in site on 127.0.0.1 (plain HTTP, a few requests per test)."""

import importlib.machinery
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    loader = importlib.machinery.SourceFileLoader("mtg_smoke_site", str(ROOT / "scripts" / "smoke-site"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


smoke = _load()


class FakeSite:
    """What the site answers: tweak the attributes to break one thing at a time."""

    def __init__(self):
        self.version = "1.2.3"
        self.revision = "9b1c2d3"
        self.health_status = 200
        self.headline = "Fête &amp; marché"
        self.version_header = True
        self.redirect_to = None  # answer every request with a 301 to this location


def serve(site):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body, content_type="application/json"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if site.version_header:
                self.send_header("X-App-Version", site.version)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if site.redirect_to:
                self.send_response(301)
                self.send_header("Location", site.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/health":
                ok = site.health_status == 200
                body = {"status": "ok", "version": site.version, "schema": 2} if ok else {"status": "error"}
                self.answer(site.health_status, json.dumps(body))
            elif self.path == "/version":
                self.answer(200, json.dumps({"version": site.version, "revision": site.revision}))
            elif self.path == "/":
                self.answer(200, f"<html><h1>{site.headline}</h1></html>", "text/html")
            else:
                self.answer(404, "{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def site():
    site = FakeSite()
    server = serve(site)
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield site
    server.shutdown()
    server.server_close()


def check(site, *extra):
    args = smoke.parse_args(["--url", site.url, "--timeout", "5", *extra])
    return dict(smoke.run_checks(args))


def test_a_healthy_site_with_the_expected_release_passes(site, capsys):
    status = smoke.main(
        [
            "--url",
            site.url,
            "--expect-version",
            "1.2.3",
            "--expect-revision",
            "9b1c2d3",
            "--expect-text",
            "Fête & marché",
        ]
    )
    assert status == 0
    assert "all 3 checks passed" in capsys.readouterr().out


def test_another_version_fails_version_and_page(site):
    problems = check(site, "--expect-version", "1.2.4")
    assert problems["health"] is None
    assert problems["version"] == "/version is '1.2.3', expected '1.2.4'"
    assert problems["page"] == "/ X-App-Version is '1.2.3', expected '1.2.4'"


def test_an_unhealthy_site_fails(site, capsys):
    site.health_status = 503
    assert smoke.main(["--url", site.url]) == 1
    out = capsys.readouterr()
    assert "FAIL health: /health answered 503" in out.out
    assert "1 check(s) failed: health" in out.err


def test_a_missing_version_header_fails(site):
    site.version_header = False
    assert check(site)["page"] == "/ has no X-App-Version header"


def test_the_expected_text_must_be_on_the_page(site):
    assert check(site, "--expect-text", "Fête & marché")["page"] is None
    assert check(site, "--expect-text", "Bienvenue")["page"] == "/ does not show 'Bienvenue'"


def test_the_http_address_must_redirect_to_https(site):
    redirector = FakeSite()
    redirector.redirect_to = "https://127.0.0.1:9443"
    server = serve(redirector)
    try:
        http_url = f"http://127.0.0.1:{server.server_address[1]}"
        assert check(site, "--http-url", http_url)["https redirect"] is None
        # The site itself answers 200 on plain HTTP: no redirect, a failure.
        assert "expected a redirect to https://" in check(site, "--http-url", site.url)["https redirect"]
    finally:
        server.shutdown()
        server.server_close()


def test_nothing_listening_is_a_failure_not_a_crash():
    args = smoke.parse_args(["--url", "http://127.0.0.1:9", "--timeout", "2"])
    problems = dict(smoke.run_checks(args))
    assert all(problem and "Error" in problem for problem in problems.values())


def test_only_loopback_skips_certificate_checks():
    assert smoke.is_loopback("https://127.0.0.1:8443") and smoke.is_loopback("https://localhost/")
    assert not smoke.is_loopback("https://site.com/")
    assert smoke.main(["--url", "ftp://127.0.0.1/"]) == 2
