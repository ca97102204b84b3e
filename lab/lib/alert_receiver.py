"""The lab's alert receiver: records what Alertmanager sends, for the tests to read.

Stands in for a team's webhook (``POST /alerts``) and for a healthchecks-style
dead-man's switch (``POST /heartbeat``). ``GET /received`` answers what came,
as JSON: ``{"alerts": [payload, ...], "heartbeats": N, "last_heartbeat": t}``.
Kept in memory, bounded; stdlib only (it runs in the lab's server image).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEEP = 500
MAX_BODY = 1 << 20


class Received:
    def __init__(self):
        self.lock = threading.Lock()
        self.alerts = []
        self.heartbeats = 0
        self.last_heartbeat = None

    def alert(self, payload):
        with self.lock:
            self.alerts = [*self.alerts, payload][-KEEP:]

    def heartbeat(self):
        with self.lock:
            self.heartbeats += 1
            self.last_heartbeat = time.time()

    def snapshot(self):
        with self.lock:
            return {"alerts": list(self.alerts), "heartbeats": self.heartbeats, "last_heartbeat": self.last_heartbeat}


RECEIVED = Received()


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413)
            return
        body = self.rfile.read(length)
        if self.path == "/heartbeat":
            RECEIVED.heartbeat()
        elif self.path == "/alerts":
            try:
                RECEIVED.alert(json.loads(body))
            except ValueError:
                self._answer(400)
                return
        else:
            self._answer(404)
            return
        self._answer(200, b"{}")

    def do_GET(self):
        if self.path == "/received":
            self._answer(200, json.dumps(RECEIVED.snapshot()).encode())
        else:
            self._answer(404)

    def log_message(self, *_args):
        pass


def main(port):
    # Every interface of its container: the lab network (alerts.lab) and the published 127.0.0.1 port.
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
