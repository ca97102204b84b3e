"""The proxy after the proxy role: HTTPS from ACME, HTTP redirected, renewals scheduled."""

import json


def test_proxy_runs_and_publishes_http_and_https(host):
    state = json.loads(host.check_output("docker inspect proxy"))[0]
    assert state["State"]["Running"]
    bindings = state["HostConfig"]["PortBindings"]
    assert {"80/tcp", "443/tcp"} <= set(bindings)


def test_proxy_runs_with_least_privilege(host):
    config = json.loads(host.check_output("docker inspect proxy"))[0]["HostConfig"]
    assert config["ReadonlyRootfs"] is True
    assert config["CapDrop"] == ["ALL"]
    assert sorted(c.removeprefix("CAP_") for c in config["CapAdd"]) == ["CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"]
    assert "no-new-privileges:true" in config["SecurityOpt"]
    assert config["Memory"] == 256 * 1024**2
    assert config["PidsLimit"] == 256
    # Read-only and still serving: nginx writes only to its tmpfs.
    assert host.run("docker exec proxy touch /etc/nginx/x").rc != 0
    assert host.run("docker exec proxy nginx -t").rc == 0


def test_certificate_comes_from_acme(host):
    out = host.check_output(
        "echo | openssl s_client -connect 127.0.0.1:443 -servername molecule-server 2>/dev/null"
        " | openssl x509 -noout -issuer -ext subjectAltName"
    )
    assert "Pebble" in out  # issued by the ACME server, not the temporary self-signed one
    assert "DNS:molecule-server" in out
    assert host.file("/etc/montaiguillon/proxy/tls/site.key").mode == 0o600


def test_http_redirects_to_https_but_serves_acme_challenges(host):
    redirect = host.run("python3 -c \"import http.client as h; c=h.HTTPConnection('127.0.0.1', 80);"
                        " c.request('GET', '/news?x=1', headers={'Host': 'molecule-server'}); r=c.getresponse();"
                        " print(r.status, r.getheader('Location'))\"")  # fmt: skip
    assert redirect.stdout.split() == ["301", "https://molecule-server/news?x=1"]
    host.run("mkdir -p /etc/montaiguillon/proxy/acme/.well-known/acme-challenge")
    host.run("echo token-content > /etc/montaiguillon/proxy/acme/.well-known/acme-challenge/probe")
    challenge = host.run(
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1/.well-known/acme-challenge/probe').read().decode())\""
    )
    assert challenge.stdout.strip() == "token-content"


def test_renewal_is_scheduled(host):
    assert host.service("certbot.timer").is_enabled
    assert host.file("/etc/letsencrypt/renewal-hooks/deploy/montaiguillon-proxy").mode == 0o755


def test_no_release_yet_answers_502_not_an_error_page_of_another_site(host):
    upstream = host.file("/etc/montaiguillon/proxy/conf.d/app-upstream.conf").content_string
    assert "down;" in upstream
    status = host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/ || python3 -c \"print('no-curl')\"")
    assert status.stdout.strip() in {"502", "no-curl"}


def test_answers_name_the_serving_slot_none_before_a_release(host):
    script = (
        "import http.client as h, ssl; c = h.HTTPSConnection('127.0.0.1', 443,"
        " context=ssl._create_unverified_context());"
        " c.request('GET', '/', headers={'Host': 'molecule-server'}); r = c.getresponse();"
        " print(r.status, r.getheader('X-Montaiguillon-Slot'))"
    )
    answer = host.run(f'python3 -c "{script}"')
    assert answer.stdout.split() == ["502", "none"], answer.stderr
    stamp = host.file("/etc/montaiguillon/proxy/conf.d/app-slot.conf").content_string
    assert 'map $host $montaiguillon_app_slot { default "none"; }' in stamp


def get(host, path, scheme="https"):
    """status, Retry-After, maintenance header and body of GET path on the proxy, from the server itself."""
    script = (
        "import http.client as h, ssl, json;"
        " c = h.HTTPSConnection('127.0.0.1', 443, context=ssl._create_unverified_context())"
        if scheme == "https"
        else "import http.client as h, json; c = h.HTTPConnection('127.0.0.1', 80)"
    )
    script += (
        f"; c.request('GET', '{path}', headers={{'Host': 'molecule-server'}}); r = c.getresponse();"
        " print(json.dumps([r.status, r.getheader('Retry-After'), r.getheader('X-Montaiguillon-Maintenance'),"
        " r.read().decode()]))"
    )
    return json.loads(host.check_output(f'python3 -c "{script}"'))


def test_the_proxy_health_endpoint_answers_on_http_and_https(host):
    assert get(host, "/.proxy/health")[0::3] == [200, "ok\n"]
    assert get(host, "/.proxy/health", scheme="http")[0::3] == [200, "ok\n"]


def test_configuration_is_valid(host):
    assert host.run("docker exec proxy nginx -t").rc == 0


def test_maintenance_flag_serves_the_page_with_503_and_retry_after_without_reload(host):
    flag = "/etc/montaiguillon/proxy/conf.d/maintenance/on"
    challenges = "/etc/montaiguillon/proxy/acme/.well-known/acme-challenge"
    assert not host.file(flag).exists  # the role never turns it on
    started = host.check_output("docker inspect -f '{{.State.StartedAt}}' proxy")
    host.check_output(f"mkdir -p {challenges} && echo token-in-maintenance > {challenges}/during")
    host.check_output(f"echo test > {flag}")
    try:
        status, retry, marker, body = get(host, "/news?x=1")
        assert (status, retry, marker) == (503, "120", "on")
        assert "<title>Back in a few minutes</title>" in body
        assert get(host, "/.proxy/health")[0] == 200
        assert get(host, "/.well-known/acme-challenge/during", scheme="http")[3] == "token-in-maintenance\n"
    finally:
        host.check_output(f"rm -f {flag}")
    status, _, marker, _ = get(host, "/news?x=1")
    assert status == 502 and marker is None  # back to the (empty) upstream
    assert host.check_output("docker inspect -f '{{.State.StartedAt}}' proxy") == started  # never restarted


def test_https_answers_carry_security_headers_and_no_nginx_version(host):
    script = (
        "import http.client as h, ssl, json; c = h.HTTPSConnection('127.0.0.1', 443,"
        " context=ssl._create_unverified_context()); c.request('GET', '/.proxy/health',"
        " headers={'Host': 'molecule-server'}); r = c.getresponse(); print(json.dumps(dict(r.getheaders())))"
    )
    headers = json.loads(host.check_output(f'python3 -c "{script}"'))
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert headers["Server"] == "nginx"  # server_tokens off: no version


def test_redirect_ignores_the_clients_host(host):
    redirect = host.run("python3 -c \"import http.client as h; c=h.HTTPConnection('127.0.0.1', 80);"
                        " c.request('GET', '/', headers={'Host': 'evil.example'}); r=c.getresponse();"
                        " print(r.status, r.getheader('Location'))\"")  # fmt: skip
    assert redirect.stdout.split() == ["301", "https://molecule-server/"]


SOCKET = "/run/montaiguillon/proxy-metrics/nginx.sock"
# GET /stub_status over nginx's metrics socket, as prometheus-nginx-exporter reads it.
STUB_STATUS = (
    "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('" + SOCKET + "');"
    " s.sendall(b'GET /stub_status HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n'); print(s.recv(4096).decode())\""
)


def test_nginx_counters_on_a_host_socket_and_no_port(host):
    answer = host.run(STUB_STATUS)
    assert answer.rc == 0, answer.stderr
    assert " 200 OK" in answer.stdout.splitlines()[0] and "Active connections:" in answer.stdout
    config = json.loads(host.check_output("docker inspect proxy"))[0]
    assert set(config["HostConfig"]["PortBindings"]) == {"80/tcp", "443/tcp"}  # no port for the counters
    assert host.run("docker exec proxy ls /nginx-metrics").stdout.split() == ["nginx.sock"]


def test_a_killed_proxy_comes_back_with_its_counters(host):
    """nginx removes its socket when it stops; a crash leaves it, and a stale one would fail nginx's bind."""
    host.check_output("kill -KILL $(docker inspect -f '{{.State.Pid}}' proxy)")  # as the OOM killer would
    assert host.file(SOCKET).exists  # what a killed nginx leaves
    waited = "for i in $(seq 60); do " + STUB_STATUS + " && exit 0; sleep 1; done; exit 1"
    back = host.run(waited)
    assert back.rc == 0, host.check_output("docker logs --tail 20 proxy 2>&1")
    assert "Active connections:" in back.stdout
    assert json.loads(host.check_output("docker inspect proxy"))[0]["RestartCount"] >= 1
