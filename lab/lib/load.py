"""A bounded HTTP(S) load loop for the lab: how many requests failed, and which versions answered.

Each request opens its own connection (as a new visitor would), so every
failure counted is a request the site really failed, not a keep-alive
connection the client chose to reuse. Bounded in count and time; it stops
by itself. Only for 127.0.0.1 (the lab).
"""

import http.client
import itertools
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    timeline: list = field(default_factory=list)  # (seconds since start, version or error)
    seconds: float = 0.0
    latencies: list = field(default_factory=list)  # (seconds since start, seconds the request took)

    @property
    def failed(self):
        return sum(self.failures.values())

    @property
    def rate(self):
        return self.sent / self.seconds if self.seconds else 0.0

    def last_versions(self, n=20):
        return [v for _, v in sorted(self.timeline)[-n:]]

    def gaps(self, threshold=0.5):
        """Longest stretch (s) with no successful answer: the traffic lost by a switch."""
        times = sorted(t for t, v in self.timeline if not str(v).startswith("error"))
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def first_answer(self, version, after=0.0):
        """Seconds since start of the first success from ``version`` started after ``after``; None if none."""
        return min((t for t, v in self.timeline if v == version and t >= after), default=None)

    def p99(self, start=0.0, end=float("inf")):
        """99th percentile latency (s) of the requests started in [start, end); None without requests."""
        taken = sorted(took for t, took in self.latencies if start <= t < end)
        return taken[min(len(taken) - 1, int(len(taken) * 0.99))] if taken else None

    def failure_window(self):
        """(first, last) start time (s since the load began) of the failed requests; None without failures."""
        times = [t for t, v in self.timeline if v is None or str(v).startswith(("error", "HTTP"))]
        return (min(times), max(times)) if times else None

    def summary(self):
        return (
            f"{self.sent} requests in {self.seconds:.1f} s ({self.rate:.0f}/s), {self.failed} failed "
            f"{dict(self.failures)}, versions {dict(self.versions)}"
        )


class Load:
    """Send GET requests at about `rate` per second until stopped, `seconds` pass, or `max_requests` are sent.

    ``rate=0``: unthrottled, each of ``workers`` connections sends its next request as soon as the last
    one is answered (the site's saturation rate, as far as this client reaches it).
    """

    def __init__(self, url, rate=200, seconds=120, max_requests=100_000, workers=None, cafile=None, host=None):
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"load is only sent to 127.0.0.1, not {parts.hostname}")
        self.parts = parts
        self.rate = rate
        self.seconds = seconds
        self.max_requests = max_requests
        # Enough workers that a slow answer (a request in flight during a switch) does not lower the rate.
        self.workers = workers or max(8, rate // 5)
        if not rate and not workers:
            raise ValueError("an unthrottled load (rate=0) needs its number of workers")
        self.host_header = host
        self.context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        if self.context is not None and host:
            self.context.check_hostname = False  # we connect to 127.0.0.1; the CA still verifies the chain
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._start = 0.0

    def _connection(self):
        port = self.parts.port or (443 if self.context else 80)
        if self.context is not None:
            return http.client.HTTPSConnection(self.parts.hostname, port, timeout=5, context=self.context)
        return http.client.HTTPConnection(self.parts.hostname, port, timeout=5)

    def _one(self):
        started = time.monotonic()
        conn = self._connection()
        try:
            headers = {"Connection": "close"}
            if self.host_header:
                headers["Host"] = self.host_header
            conn.request("GET", self.parts.path or "/", headers=headers)
            response = conn.getresponse()
            response.read()
            version = response.getheader("X-App-Version")
            outcome = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            version, outcome = None, f"error {type(exc).__name__}"
        finally:
            conn.close()
        elapsed = time.monotonic() - started
        with self._lock:
            r = self.result
            r.sent += 1
            r.latencies.append((started - self._start, elapsed))
            if outcome is None:
                r.ok += 1
                r.versions[version] += 1
                r.timeline.append((started - self._start, version))
            else:
                r.failures[outcome] += 1
                r.timeline.append((started - self._start, outcome))

    def _worker(self, index):
        if not self.rate:
            return self._flat_out()
        interval = self.workers / self.rate
        next_at = self._start + index * interval / self.workers
        while not self._stop.is_set():
            now = time.monotonic()
            if now - self._start > self.seconds:
                break
            with self._lock:
                if self.result.sent >= self.max_requests:
                    break
            if next_at > now:
                time.sleep(next_at - now)
            next_at = max(next_at + interval, time.monotonic() - interval)
            self._one()

    def _flat_out(self):
        while not self._stop.is_set() and time.monotonic() - self._start <= self.seconds:
            with self._lock:
                if self.result.sent >= self.max_requests:
                    return
            self._one()

    def elapsed(self):
        """Seconds since the load started: the clock of ``timeline`` and ``latencies``."""
        return time.monotonic() - self._start

    def __enter__(self):
        self._start = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self.result.seconds = time.monotonic() - self._start
        return self.result
