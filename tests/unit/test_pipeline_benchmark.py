"""benchmarks/pipeline.py with a fake pipeline and a fake registry (no Docker, no lab)."""

import base64
import io
import json
import sys
import urllib.error

import pytest
import sourcefile

bench = sourcefile.load("benchmarks/pipeline.py", "mtg_bench_pipeline")


def result(seconds, ok=True, version="v"):
    stages = [{"name": n, "status": "passed", "seconds": s, "log": f"{n}.log"} for n, s in seconds.items()]
    return {"ok": ok, "version": version, "stages": stages, "total_seconds": sum(seconds.values()), "message": ""}


# Job labels as scripts/pipeline reports them (act's).
LINT, BUILD = "CI/CI/Lint (yamllint)", "CD/Publish the image to GHCR"
TEST, PROD = "CD/Deploy to test (dev.site)", "CD/Promote to prod (site.com)"
COLD = result({LINT: 30.0, BUILD: 150.0, TEST: 60.0, PROD: 60.0})
WARM = result({LINT: 30.0, BUILD: 10.0, TEST: 40.0, PROD: 40.0})


def test_shares_add_up_to_the_whole_run():
    share = bench.shares(COLD)
    assert share[BUILD] == pytest.approx(0.5)
    assert sum(share.values()) == pytest.approx(1.0)


def test_the_dominant_stage_and_why():
    assert bench.dominant(COLD)["name"] == BUILD
    assert bench.dominant(WARM)["name"] == TEST
    text = bench.explain({"cold": COLD, "warm": WARM})
    assert f"cold: {BUILD} dominates (150.0 s, 50%): docker build then push" in text
    assert f"warm: {TEST} dominates (40.0 s, 33%): the deploy tools' virtualenv" in text
    assert f"cold minus warm: {BUILD} +140.0 s, {TEST} +20.0 s, {PROD} +20.0 s, {LINT} +0.0 s" in text


def test_the_table_gives_shares_and_the_verdict_against_each_target():
    table = bench.render("warm", WARM)
    assert f"{BUILD}  passed       10.0   8.3%" in table
    assert "within the 5-minute target" in table
    slow = result({"build": 1000.0})
    assert "OVER the 15-minute target" in bench.render("cold", slow)


def test_skipped_stages_have_no_share():
    run = result({"build": 10.0})
    run["stages"].insert(0, {"name": "lint", "status": "skipped", "seconds": 0.0})
    assert "lint" not in bench.shares(run)
    assert bench.render("warm", run).splitlines()[2].split() == ["lint", "skipped"]


def fake_pipeline(tmp_path, runs):
    """A stand-in for scripts/pipeline: prints the next canned JSON result on each call."""
    state = tmp_path / "calls"
    state.write_text("0")
    script = tmp_path / "fake_pipeline.py"
    script.write_text(
        "import json, sys, pathlib\n"
        f"state = pathlib.Path({str(state)!r})\n"
        "n = int(state.read_text())\n"
        "state.write_text(str(n + 1))\n"
        f"runs = json.loads({json.dumps(json.dumps(runs))})\n"
        "assert sys.argv[1] == '--json'\n"
        "print(json.dumps(runs[n]))\n"
    )
    return f"{sys.executable} {script}", state


def test_a_cold_then_warm_run_is_printed_and_saved(tmp_path, capsys):
    command, state = fake_pipeline(tmp_path, [COLD, WARM])
    status = bench.main(["--no-reset", "--pipeline", command, "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert status == 0
    assert state.read_text() == "2"
    assert "== cold run" in out and "== warm run" in out
    saved = json.loads(next((tmp_path / "results").glob("pipeline-*.json")).read_text())
    assert saved["runs"]["cold"]["total_seconds"] == 300.0 and saved["reset"] is False


def test_a_failed_cold_run_stops_the_benchmark(tmp_path, capsys):
    failed = result({"lint": 5.0}, ok=False)
    command, state = fake_pipeline(tmp_path, [failed, WARM])
    assert bench.main(["--no-reset", "--pipeline", command, "--results", str(tmp_path)]) == 1
    assert state.read_text() == "1"
    assert "== warm run" not in capsys.readouterr().out


class FakeRegistry:
    """Answers the v2 API calls delete_registry_manifests makes, and records them."""

    def __init__(self, tags):
        self.tags = tags
        self.calls = []
        self.authorizations = []

    def __call__(self, request, timeout):
        url = request if isinstance(request, str) else request.full_url
        method = "GET" if isinstance(request, str) else request.get_method()
        self.calls.append((method, url))
        self.authorizations.append(None if isinstance(request, str) else request.get_header("Authorization"))
        if url.endswith("/tags/list"):
            if self.tags is None:
                raise urllib.error.HTTPError(url, 404, "not found", {}, io.BytesIO())
            return Response(json.dumps({"tags": self.tags}).encode(), {})
        tag = url.rsplit("/", 1)[1]
        return Response(b"", {"Docker-Content-Digest": f"sha256:{tag.split('-')[0]}"})


class Response(io.BytesIO):
    def __init__(self, body, headers):
        super().__init__(body)
        self.headers = headers


LAB_ACCOUNT = ("montaiguillon", "lab-secret")


def test_registry_reset_deletes_each_manifest_once_by_digest():
    registry = FakeRegistry(["1-a", "1-b", "2-a"])  # two tags share the digest sha256:1
    assert bench.delete_registry_manifests(opener=registry, credentials=LAB_ACCOUNT) == 2
    deletes = [url for method, url in registry.calls if method == "DELETE"]
    assert deletes == [
        "http://127.0.0.1:5000/v2/montaiguillon/site/manifests/sha256:1",
        "http://127.0.0.1:5000/v2/montaiguillon/site/manifests/sha256:2",
    ]


def test_registry_reset_of_an_unknown_repository_is_a_no_op_and_only_on_loopback():
    assert bench.delete_registry_manifests(opener=FakeRegistry(None), credentials=LAB_ACCOUNT) == 0
    with pytest.raises(ValueError, match="lab registry"):
        bench.delete_registry_manifests("https://ghcr.io", opener=FakeRegistry([]), credentials=LAB_ACCOUNT)


def test_registry_reset_logs_in_on_every_request():
    """The lab registry refuses anonymous requests (htpasswd, like a private GHCR package)."""
    registry = FakeRegistry(["1-a"])
    bench.delete_registry_manifests(opener=registry, credentials=LAB_ACCOUNT)
    expected = "Basic " + base64.b64encode(b"montaiguillon:lab-secret").decode()
    assert len(registry.calls) == 3
    assert registry.authorizations == [expected] * 3


@pytest.mark.parametrize(
    ("environ", "where"),
    [
        ({"LAB_REGISTRY_PASSWORD_FILE": "{tmp}/pw"}, "pw"),
        ({"LAB_INVENTORY": "{tmp}/lab2/hosts.yml"}, "lab2/.generated/registry/password"),
    ],
)
def test_lab_registry_credentials_come_from_the_generated_password(tmp_path, environ, where):
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("generated-secret\n")
    environ = {key: value.format(tmp=tmp_path) for key, value in environ.items()}
    assert bench.lab_registry_credentials(environ) == ("montaiguillon", "generated-secret")
