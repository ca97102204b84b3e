#!/usr/bin/env python3
"""Manual check of bluegreen_release against this machine's Docker engine (not run by CI).

The host plays the server: it builds the proxy image (lab/images/proxy) and a
tiny app image in three versions, creates networks and a proxy published on
127.0.0.1:18080 (HTTP) and 127.0.0.1:18443 (HTTPS, self-signed), then runs the
module through `ansible localhost -m bluegreen_release` with the interpreter
given by --python (use one with the Docker SDK 5.0.3, as Debian 12 ships it):

  1. deploy v1 (first deploy, blue);
  2. with a bounded request loop running against http://127.0.0.1:18080:
     deploy v2 (green), deploy v2 again (no change), roll back (warm, blue),
     deploy v2 again, deploy a broken image (health never passes: fails,
     v2 keeps serving);
  3. report switch times and failed requests (must be 0), then remove
     everything it created (all named bgdev-*).

    python3 tests/integration/bluegreen_host_check.py --python /path/to/python-with-docker-5.0.3
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "bgdev"
NAME = f"{PREFIX}-app"
NETWORKS = [f"{PREFIX}-frontend", f"{PREFIX}-backend"]
PROXY = f"{PREFIX}-proxy"
UPSTREAM = "bgdev_app"
HTTP_PORT, HTTPS_PORT = 18080, 18443

APP = r"""
import json, os, signal, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "0")
HEALTHY = os.environ.get("APP_HEALTHY", "1") == "1"
UNHEALTHY_AFTER = float(os.environ.get("APP_UNHEALTHY_AFTER", "0"))  # seconds; 0: never
START = time.monotonic()
time.sleep(float(os.environ.get("APP_BOOT_SECONDS", "1")))  # a real app takes a moment to start

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/health":
            healthy = HEALTHY and not (UNHEALTHY_AFTER and time.monotonic() - START > UNHEALTHY_AFTER)
            status, body = (200, b"ok\n") if healthy else (503, b"database unreachable\n")
        elif self.path == "/version":
            status, body = 200, json.dumps({"version": VERSION, "revision": "rev-" + VERSION}).encode()
        else:
            status, body = 200, f"hello from {VERSION}\n".encode()
        self.send_response(status)
        self.send_header("X-App-Version", VERSION)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
server.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print(f"app {VERSION} listening on 8000 (healthy={HEALTHY})", flush=True)
server.serve_forever()
server.server_close()
"""

SITE_CONF = f"""
server {{
    listen 80;
    listen 443 ssl;
    server_name _;
    ssl_certificate     /etc/nginx/certs/cert.pem;
    ssl_certificate_key /etc/nginx/certs/key.pem;
    location / {{
        proxy_pass http://{UPSTREAM};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
    }}
}}
"""

PLACEHOLDER = f"upstream {UPSTREAM} {{ server 127.0.0.1:9 down; }}\n"


def sh(*args, check=True, capture=True, timeout=600):
    result = subprocess.run(args, check=False, capture_output=capture, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def build_images(work):
    print("building images...", flush=True)
    sh("docker", "build", "-q", "-t", f"{PREFIX}-proxy", str(ROOT / "lab/images/proxy"))
    base = work / "app-base"
    base.mkdir()
    (base / "Dockerfile").write_text(
        "FROM debian:bookworm\n"
        "ENV DEBIAN_FRONTEND=noninteractive\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3 "
        "&& apt-get clean && rm -rf /var/lib/apt/lists/*\n"
    )
    sh("docker", "build", "-q", "-t", f"{PREFIX}-app-base", str(base))
    variants = (
        ("v1", "1.0.0", "APP_HEALTHY=1"),
        ("v2", "2.0.0", "APP_HEALTHY=1"),
        ("broken", "3.0.0", "APP_HEALTHY=0"),
        ("flaky", "4.0.0", "APP_HEALTHY=1 APP_UNHEALTHY_AFTER=5"),
    )
    for tag, version, health in variants:
        ctx = work / f"app-{tag}"
        ctx.mkdir()
        (ctx / "app.py").write_text(APP)
        (ctx / "Dockerfile").write_text(
            f"FROM {PREFIX}-app-base\n"
            f'LABEL org.opencontainers.image.version="{version}"\n'
            f"ENV APP_VERSION={version} {health}\n"
            "COPY app.py /app.py\n"
            "STOPSIGNAL SIGTERM\n"
            'CMD ["python3", "-u", "/app.py"]\n'
        )
        sh("docker", "build", "-q", "-t", f"{PREFIX}-app:{tag}", str(ctx))


def start_proxy(work):
    conf = work / "conf.d"
    certs = work / "certs"
    conf.mkdir()
    certs.mkdir()
    sh(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bgdev.test",
        "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem"),
    )  # fmt: skip
    (conf / "site.conf").write_text(SITE_CONF)
    (conf / f"{NAME}-upstream.conf").write_text(PLACEHOLDER)  # what the proxy role writes with force: false
    sh("docker", "network", "create", NETWORKS[0])
    sh("docker", "network", "create", "--internal", NETWORKS[1])
    sh(
        "docker", "run", "-d", "--name", PROXY, "--network", NETWORKS[0],
        "-p", f"127.0.0.1:{HTTP_PORT}:80", "-p", f"127.0.0.1:{HTTPS_PORT}:443",
        "-v", f"{conf}:/etc/nginx/conf.d:ro", "-v", f"{certs}:/etc/nginx/certs:ro",
        f"{PREFIX}-proxy",
    )  # fmt: skip
    for _ in range(50):
        if sh("docker", "exec", PROXY, "nginx", "-t", check=False).returncode == 0:
            return conf
        time.sleep(0.2)
    raise SystemExit("proxy did not start:\n" + sh("docker", "logs", PROXY, check=False).stderr)


def run_module(python, work, **args):
    check_mode = args.pop("_check", False)
    params = {
        "name": NAME,
        "networks": NETWORKS,
        "proxy_container": PROXY,
        "proxy_conf_dir": str(work / "conf.d"),
        "proxy_upstream": UPSTREAM,
        "state_dir": str(work / "state"),
        "verify_url": f"https://127.0.0.1:{HTTPS_PORT}/version",
        "verify_host": "bgdev.test",
        "requested_by": "host-check",
        "pull": False,  # no registry here
        "env": {"DATABASE_PASSWORD": "not-a-secret"},
        "health_timeout": 20,
        "verify_window": 3,
    }
    params.update(args)
    env = dict(
        os.environ,
        ANSIBLE_MODULE_UTILS=str(ROOT / "plugins/module_utils"),
        ANSIBLE_LIBRARY=str(ROOT / "plugins/modules"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    ansible = Path(sys.executable).with_name("ansible")
    command = [str(ansible), "localhost", "-i", "localhost,", "-c", "local", "-m", "bluegreen_release"]
    command += ["-a", json.dumps(params)]
    command += ["-e", f"ansible_python_interpreter={python}"]
    if check_mode:
        command += ["--check", "--diff"]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    try:
        document, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{") :])
        result = document["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise SystemExit(f"cannot read ansible's output:\n{proc.stdout}\n{proc.stderr}") from None
    result["_wall"] = round(time.monotonic() - started, 2)
    return result


class Load:
    """Bounded request loop: `workers` threads, each at most `count` requests and `seconds` long."""

    def __init__(self, workers=4, count=4000, seconds=240):
        self.workers, self.count, self.seconds = workers, count, seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.total = 0
        self.failures = []
        self.versions = {}

    def worker(self):
        deadline = time.monotonic() + self.seconds
        for _ in range(self.count):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=5)
                conn.request("GET", "/", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                conn.close()
                ok, version = response.status == 200, response.getheader("X-App-Version")
                detail = f"HTTP {response.status}"
            except OSError as exc:
                ok, version, detail = False, None, repr(exc)
            with self.lock:
                self.total += 1
                self.versions[version] = self.versions.get(version, 0) + 1
                if not ok:
                    self.failures.append(detail)
            time.sleep(0.005)

    def __enter__(self):
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(self.workers)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def cleanup(work):
    names = sh("docker", "ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
    for name in names:
        if name.startswith(f"{PREFIX}-"):
            sh("docker", "rm", "-f", name, check=False)
    for network in NETWORKS:
        sh("docker", "network", "rm", network, check=False)
    images = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    for image in images:
        if image.startswith(f"{PREFIX}-"):
            sh("docker", "rmi", "-f", image, check=False)
    if work:
        shutil.rmtree(work, ignore_errors=True)


def show(label, result):
    steps = " > ".join(f"{s['step']} {s['seconds']:.2f}s" for s in result.get("steps", []))
    state = "FAILED" if result.get("failed") else ("changed" if result.get("changed") else "ok")
    print(f"\n== {label}: {state} in {result['_wall']} s; live={result.get('live_colour')} "
          f"switch_seconds={result.get('switch_seconds')}")  # fmt: skip
    if steps:
        print(f"   {steps}")
    if result.get("failed"):
        print("   msg: " + result.get("msg", "").replace("\n", "\n        "))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="interpreter the module runs with (Docker SDK 5.0.3)")
    parser.add_argument("--keep", action="store_true", help="leave everything in place (then clean up by hand)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    problems = []
    try:
        cleanup(None)
        build_images(work)
        start_proxy(work)

        first = run_module(options.python, work, image=f"{PREFIX}-app:v1")
        show("deploy v1", first)
        if first.get("failed") or first["live_colour"] != "blue":
            raise SystemExit("the first deploy failed")

        switches = []
        with Load() as load:
            time.sleep(2)
            v2 = run_module(options.python, work, image=f"{PREFIX}-app:v2", revision="v2sha")
            show("deploy v2 under load", v2)
            again = run_module(options.python, work, image=f"{PREFIX}-app:v2")
            show("deploy v2 again (idempotence)", again)
            check = run_module(options.python, work, image=f"{PREFIX}-app:v1", _check=True)
            show("check mode deploy v1", check)
            back = run_module(options.python, work, state="rolled_back")
            show("rollback under load", back)
            migrate_ok = ["python3", "-c", "print('migrated 2 tables')"]
            forward = run_module(options.python, work, image=f"{PREFIX}-app:v2", migrate_command=migrate_ok)
            show("deploy v2 again with a migration, under load", forward)
            broken = run_module(options.python, work, image=f"{PREFIX}-app:broken", health_timeout=6)
            show("deploy broken under load", broken)
            migrate_ko = ["python3", "-c", "import sys; print('ERROR 1060: duplicate column'); sys.exit(3)"]
            bad_migration = run_module(options.python, work, image=f"{PREFIX}-app:v1", migrate_command=migrate_ko)
            show("deploy with a failing migration", bad_migration)
            flaky = run_module(options.python, work, image=f"{PREFIX}-app:flaky", verify_window=8)
            show("deploy flaky (unhealthy after the switch) under load", flaky)
            time.sleep(2)
        status = run_module(options.python, work, state="status", history=20)
        print("\n== status:", json.dumps({k: status.get(k) for k in ("live_colour", "idle_colour", "lock")}))
        for entry in status["releases"]:
            print(f"   {entry['release']} {entry['outcome']:<11} {entry['image']:<18} v{entry['version']} "
                  f"{entry['colour']} switch={entry['switch_seconds']}")  # fmt: skip

        for label, result in (("v2", v2), ("rollback", back), ("forward", forward)):
            if result.get("failed") or not result.get("changed"):
                problems.append(f"{label} should have changed: {result.get('msg')}")
            switches.append(result.get("switch_seconds"))
        if again.get("changed") or again.get("failed"):
            problems.append("deploying the live image again changed something")
        if not check.get("changed") or check.get("failed") or "diff" not in check:
            problems.append("check mode should report a change with a diff")
        if not broken.get("failed") or "did not become healthy within 6 s" not in broken.get("msg", ""):
            problems.append("the broken deploy should fail on its health check")
        if not bad_migration.get("failed") or "migrations failed" not in bad_migration.get("msg", ""):
            problems.append("the failing migration should fail the deploy")
        if not flaky.get("failed") or "switched back to green" not in flaky.get("msg", ""):
            problems.append("the flaky release should have been switched back")
        if status["live_colour"] != forward["live_colour"] or status["live"]["reported_version"] != "2.0.0":
            problems.append("after the failed deploys, v2 should still be live")
        print(f"\nswitch_seconds: {switches}")
        print(f"requests: {load.total}, failed: {len(load.failures)}, versions seen: {load.versions}")
        if load.failures:
            problems.append(f"{len(load.failures)} failed requests, e.g. {load.failures[:5]}")
        if load.total < 100:
            problems.append("the load loop sent too few requests to mean anything")
    finally:
        if not options.keep:
            cleanup(work)
            print("\nremoved every bgdev-* container, network and image")
    if problems:
        print("\nPROBLEMS:\n- " + "\n- ".join(problems))
        return 1
    print("\nall good")
    return 0


if __name__ == "__main__":
    sys.exit(main())
