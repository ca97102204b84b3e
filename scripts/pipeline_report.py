"""The report of scripts/pipeline: the probe (bounded requests to prod while it deploys) and the table.

Only loopback addresses are accepted: this is load, and load goes to 127.0.0.1 only.
Standard library only.
"""

import ipaddress
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

TARGET_SECONDS = 300.0  # the mission: a deploy in 5 minutes


def is_loopback(url):
    """True for an http(s) URL whose host is a loopback address (or localhost)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_context_for(url):
    """Verify certificates, except for the lab on 127.0.0.1 (self-signed lab CA)."""
    context = ssl.create_default_context()
    if is_loopback(url):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@dataclass
class ProbeReport:
    url: str
    requests: int = 0
    failed: int = 0
    seconds: float = 0.0
    versions: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    stopped_by: str = ""


class Probe(threading.Thread):
    """GET url in a loop until stopped, max_requests sent or max_seconds passed; count failures.

    A failure is anything but a 2xx answer (a refused connection, a timeout, a 5xx, a 3xx).
    Only loopback addresses are accepted: this is load, and load goes to 127.0.0.1 only.
    """

    def __init__(self, url, max_requests=3000, max_seconds=600.0, interval=0.05, timeout=5.0, fetch=None):
        super().__init__(name="probe", daemon=True)
        if not is_loopback(url):
            raise ValueError(f"probe: {url} is not a loopback address; the probe only targets 127.0.0.1")
        if max_requests < 1 or max_seconds <= 0:
            raise ValueError("probe: max_requests and max_seconds must be positive")
        self.url = url
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.interval = interval
        self.timeout = timeout
        self.fetch = fetch or self._fetch
        self.report = ProbeReport(url)
        self._stop_event = threading.Event()
        self._opener = urllib.request.build_opener(
            NoRedirect, urllib.request.HTTPSHandler(context=ssl_context_for(url))
        )

    def _fetch(self):
        """(status, X-App-Version) of one request; raises on a connection error."""
        # The URL was checked in __init__: http(s) on a loopback address only.
        request = urllib.request.Request(self.url, headers={"User-Agent": "montaiguillon-pipeline-probe"})  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return response.status, response.headers.get("X-App-Version", "")
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("X-App-Version", "") if error.headers else ""

    def stop(self):
        self._stop_event.set()

    def run(self):
        start = time.monotonic()
        report = self.report
        while True:
            if self._stop_event.is_set():
                report.stopped_by = "deploy finished"
                break
            if report.requests >= self.max_requests:
                report.stopped_by = f"request limit ({self.max_requests})"
                break
            if time.monotonic() - start >= self.max_seconds:
                report.stopped_by = f"time limit ({self.max_seconds:g} s)"
                break
            report.requests += 1
            try:
                status, version = self.fetch()
            except (OSError, urllib.error.URLError) as error:
                status, version = None, ""
                problem = f"request {report.requests}: {error}"
            else:
                problem = f"request {report.requests}: HTTP {status}"
            if version:
                report.versions[version] = report.versions.get(version, 0) + 1
            if status is None or not 200 <= status < 300:
                report.failed += 1
                if len(report.errors) < 5:
                    report.errors.append(problem)
            self._stop_event.wait(self.interval)
        report.seconds = round(time.monotonic() - start, 2)


def format_seconds(seconds):
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:7.1f} s" + (f"  ({minutes} min {rest:02d} s)" if minutes else "")


def render_table(result):
    """One row per job as act ran it, the total against the 5-minute target, the probe, the verdict."""
    rows = [("job", "status", "duration", "detail")]
    for job in result.jobs:
        detail = job.outputs.get("ref", "") or (f"failed at: {job.failed_step}" if job.failed_step else "")
        rows.append((job.label, job.status, f"{job.seconds:7.1f} s", detail))
    rows += [(name, "did not run", "", "its if: was false or a job before it failed") for name in result.missing]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    rule = "-" * (sum(widths) + 30)
    lines = []
    for index, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip())
        if index == 0:
            lines.append(rule)
    lines.append(rule)
    total = result.total_seconds
    if not result.ok:
        verdict = "the run failed: no comparison with the 5-minute target"
    elif total <= TARGET_SECONDS:
        verdict = f"within the 5-minute target ({TARGET_SECONDS - total:.1f} s to spare)"
    else:
        verdict = f"OVER the 5-minute target by {total - TARGET_SECONDS:.1f} s"
    lines.append(f"{'total':<{widths[0]}}  {'':<{widths[1]}}  {format_seconds(total)}  {verdict}")
    if result.probe:
        p = result.probe
        seen = ", ".join(f"{v} x{n}" for v, n in p.versions.items()) or "none"
        lines.append(
            f"probe: {p.requests} request(s) to {p.url} during the prod job in {p.seconds:.1f} s, "
            f"{p.failed} failed (0 expected); versions seen: {seen}; stopped by {p.stopped_by}"
        )
        lines.extend(f"  {error}" for error in p.errors)
    verdict = "every job succeeded" if result.ok else f"act exit status {result.exit_status}"
    lines.append(("OK: " if result.ok else "FAILED: ") + f"{verdict}; log: {result.log}")
    return "\n".join(lines)
