"""scripts/pipeline_report.py: the bounded probe that counts failed requests to prod while it deploys."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import pipeline_report as pipeline


def test_the_probe_counts_failed_requests_and_versions():
    answers = iter([(200, "1"), (502, ""), OSError("refused"), (200, "2"), (200, "2")])

    def fetch():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    probe = pipeline.Probe("https://127.0.0.1:9443/", max_requests=5, max_seconds=30, interval=0, fetch=fetch)
    probe.run()
    report = probe.report
    assert report.requests == 5 and report.failed == 2
    assert report.versions == {"1": 1, "2": 2}
    assert report.stopped_by == "request limit (5)"
    assert report.errors == ["request 2: HTTP 502", "request 3: refused"]


def test_the_probe_stops_at_its_time_limit():
    probe = pipeline.Probe("https://127.0.0.1:9443/", max_requests=10**9, max_seconds=0.2, interval=0.01)
    probe.fetch = lambda: (200, "1")
    probe.run()
    assert probe.report.stopped_by == "time limit (0.2 s)"
    assert 0 < probe.report.requests < 10**9


def test_the_probe_only_targets_loopback():
    for url in ("https://site.com/", "https://10.0.0.1/", "file:///etc/passwd"):
        with pytest.raises(ValueError, match="loopback"):
            pipeline.Probe(url)
    pipeline.Probe("http://localhost:9080/")
