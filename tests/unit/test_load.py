"""lab/lib/load.py: the unthrottled mode and the figures the deploy benchmark reads (a local server)."""

import http.server
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab/lib"))
from load import Load, LoadResult


class Versioned(http.server.BaseHTTPRequestHandler):
    version = "1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("X-App-Version", type(self).version)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_unthrottled_load_outruns_a_throttled_one(http_server):
    url = http_server(Versioned) + "/"
    with Load(url, rate=20, seconds=0.5, workers=4) as throttled:
        time.sleep(0.5)
    with Load(url, rate=0, seconds=0.5, workers=4) as flat_out:
        time.sleep(0.5)
    slow, fast = throttled.stop(), flat_out.stop()
    assert slow.failed == 0 and fast.failed == 0
    assert slow.sent <= 14
    assert fast.sent > 3 * slow.sent
    assert all(took > 0 for _, took in fast.latencies)


def test_unthrottled_needs_its_workers():
    with pytest.raises(ValueError, match="needs its number of workers"):
        Load("http://127.0.0.1:9/", rate=0)


def test_first_answer_of_a_version_and_the_p99_of_a_window():
    result = LoadResult()
    result.timeline = [(0.1, "1"), (0.5, "1"), (1.2, "2"), (1.4, "error ConnectionRefusedError"), (2.0, "2")]
    result.latencies = [(i / 100, 0.010) for i in range(100)] + [(1.0 + i / 100, 0.050) for i in range(100)]
    result.latencies[150] = (1.5, 0.900)
    assert result.first_answer("2") == 1.2
    assert result.first_answer("2", after=1.3) == 2.0
    assert result.first_answer("3") is None
    assert result.p99(0, 1) == 0.010
    assert result.p99(1.0) == 0.900  # the slowest of 100 is its 99th percentile
    assert result.p99(5.0) is None
