"""HTTP probing for the deploy: one GET, no redirects, a short timeout, a fresh connection.

Used for the slots' health and version and for verifying the switch through the proxy.
"""

import http.client
import ssl
import urllib.parse

PROBE_TIMEOUT = 2.0


class ProbeError(Exception):
    """An HTTP probe got no answer (connection refused, timeout, TLS...)."""


class HttpAnswer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def describe(self):
        body = " ".join(self.body.split())[:200]
        return f"HTTP {self.status}" + (f": {body}" if body else "")


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS with a TLS server name that may differ from the address (IP + site name)."""

    def __init__(self, *args, server_hostname=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._server_hostname = server_hostname

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname or self.host)


class HttpProbe:
    """One GET, no redirects followed, short timeout, a fresh connection each time."""

    def get(self, url, timeout=PROBE_TIMEOUT, host=None, verify_tls=True):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProbeError(f"cannot probe {url!r}: only http:// and https:// URLs")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if parts.scheme == "https":
            context = ssl.create_default_context()
            if not verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = _HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=context, server_hostname=host or parts.hostname
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        headers = {"Connection": "close", "User-Agent": "bluegreen_release", "Accept": "*/*"}
        if host:
            headers["Host"] = host
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read(65536).decode("utf-8", errors="replace")
            answer = HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        except (OSError, http.client.HTTPException) as exc:
            raise ProbeError(f"GET {url}: {exc.__class__.__name__}: {exc}") from exc
        finally:
            conn.close()
        return answer


def poll_until_ok(check, timeout, interval, clock, sleep, first=None):
    """Call ``check()`` (returns ``(ok, last_answer)``) until ok or ``timeout`` s: ``(ok, attempts, last)``.

    At least one try; an exception from ``check`` ends the polling. Waits ``interval`` s between
    tries; with ``first``, the first wait is that long and each next one doubles up to ``interval``
    (a container that is ready in 0.3 s is seen then, not a whole interval later).
    """
    deadline = clock() + timeout
    attempts = 0
    wait = min(first, interval) if first else interval
    while True:
        attempts += 1
        ok, last = check()
        if ok or clock() >= deadline:
            return ok, attempts, last
        sleep(wait)
        wait = min(wait * 2, interval)
