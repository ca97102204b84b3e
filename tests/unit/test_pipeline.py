"""scripts/pipeline: the stage chain with its commands faked (no make, no lab, no network)."""

import datetime
import importlib.machinery
import importlib.util
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "lab-registry:5000/montaiguillon/site@sha256:" + "ab" * 32


def _load():
    loader = importlib.machinery.SourceFileLoader("mtg_pipeline", str(ROOT / "scripts" / "pipeline"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


pipeline = _load()


class FakeRunner:
    """Stands in for run_command: records each command, answers per stage."""

    def __init__(self, fail=(), outputs=None, clock=None, seconds=None):
        self.fail = set(fail)
        self.outputs = {"build": f"building...\n{DIGEST}\n", **(outputs or {})}
        self.calls = []
        self.clock = clock
        self.seconds = seconds or {}

    def __call__(self, command, log_path, env, verbose):
        stage = log_path.stem
        self.calls.append((stage, command, env))
        if self.clock:
            self.clock.now += self.seconds.get(stage, 1.0)
        return (3 if stage in self.fail else 0), self.outputs.get(stage, f"{stage} output\n")

    def stages(self):
        return [stage for stage, _, _ in self.calls]

    def command(self, stage):
        return next(command for name, command, _ in self.calls if name == stage)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def context(tmp_path, **overrides):
    values = {
        "version": "1.2.3",
        "revision": "9b1c2d3e4f5a",
        "run_id": "local-test",
        "headline": "Welcome & hello",
        "log_dir": tmp_path / "logs",
    }
    values.update(overrides)
    return pipeline.Context(**values)


def run(tmp_path, selected=pipeline.STAGE_NAMES, runner=None, **kwargs):
    runner = runner or FakeRunner()
    ctx = kwargs.pop("ctx", None) or context(tmp_path)
    out = io.StringIO()
    result = pipeline.Pipeline(ctx, selected, runner=runner, out=out, **kwargs).run()
    return result, runner, out.getvalue()


def prod_commands(runner):
    return [command for _, command, _ in runner.calls if "ENV=prod" in command or "9443" in " ".join(command)]


# --- the chain --------------------------------------------------------------


def test_every_stage_runs_in_order_and_passes(tmp_path):
    result, runner, _ = run(tmp_path)
    assert runner.stages() == list(pipeline.STAGE_NAMES)
    assert [r.status for r in result.stages] == ["passed"] * 8
    assert result.ok
    assert result.message == "every stage passed"


def test_build_keeps_the_digest_and_both_deploys_use_that_same_digest(tmp_path):
    result, runner, _ = run(tmp_path)
    assert result.ctx.ref == DIGEST
    for stage, environment in (("deploy-test", "test"), ("deploy-prod", "prod")):
        command = runner.command(stage)
        assert command[:4] == ["make", "--no-print-directory", "-s", "deploy-to"]
        assert f"ENV={environment}" in command
        assert f"REF={DIGEST}" in command


def test_deploys_carry_the_revision_and_the_run_id_for_the_ledger(tmp_path):
    _, runner, _ = run(tmp_path)
    for stage in ("deploy-test", "deploy-prod"):
        command = runner.command(stage)
        assert "REVISION=9b1c2d3e4f5a" in command and "RUN_ID=local-test" in command


def test_build_publishes_the_version_with_the_revision(tmp_path):
    _, runner, _ = run(tmp_path)
    stage, command, env = runner.calls[3]
    assert stage == "build"
    assert command[-2:] == ["release", "VERSION=1.2.3"]
    assert env["APP_REVISION"] == "9b1c2d3e4f5a"


def test_smoke_stages_expect_the_new_version_and_headline_on_the_right_site(tmp_path):
    _, runner, _ = run(tmp_path)
    test_smoke, prod_smoke = runner.command("smoke-test"), runner.command("smoke-prod")
    assert test_smoke[test_smoke.index("--url") + 1] == "https://127.0.0.1:8443"
    assert prod_smoke[prod_smoke.index("--url") + 1] == "https://127.0.0.1:9443"
    for command in (test_smoke, prod_smoke):
        assert command[command.index("--expect-version") + 1] == "1.2.3"
        assert command[command.index("--expect-text") + 1] == "Welcome & hello"


@pytest.mark.parametrize("failing", ["lint", "unit", "site", "build", "deploy-test", "smoke-test"])
def test_a_failure_before_prod_stops_the_chain_and_prod_is_never_touched(tmp_path, failing):
    runner = FakeRunner(fail={failing})
    result, runner, out = run(tmp_path, runner=runner)
    index = pipeline.STAGE_NAMES.index(failing)
    assert runner.stages() == list(pipeline.STAGE_NAMES[: index + 1])
    assert prod_commands(runner) == []
    statuses = {r.name: r.status for r in result.stages}
    assert statuses[failing] == "failed"
    assert all(statuses[n] == "not run" for n in pipeline.STAGE_NAMES[index + 1 :])
    assert not result.ok
    assert f"stage {failing} failed (exit status 3)" in result.message
    assert "Prod untouched" in result.message
    last_line = runner.outputs.get(failing, f"{failing} output").strip().splitlines()[-1]
    assert f"    | {last_line}" in out  # the end of the failed stage's output is shown


def test_a_build_without_a_digest_fails_and_nothing_is_deployed(tmp_path):
    result, runner, _ = run(tmp_path, runner=FakeRunner(outputs={"build": "pushed, but no digest\n"}))
    assert runner.stages() == ["lint", "unit", "site", "build"]
    assert result.stages[3].status == "failed"
    assert "no digest reference" in result.stages[3].detail


def test_a_failed_prod_smoke_test_rolls_prod_back(tmp_path):
    result, runner, _ = run(tmp_path, runner=FakeRunner(fail={"smoke-prod"}))
    assert runner.stages()[-2:] == ["smoke-prod", "rollback-prod"]
    assert runner.command("rollback-prod")[-2:] == ["rollback-env", "ENV=prod"]
    assert result.stages[-1].name == "rollback-prod" and result.stages[-1].status == "passed"
    assert "rolled back to its previous release" in result.message
    assert not result.ok


def test_no_rollback_leaves_prod_as_it_is_and_says_how_to_roll_back(tmp_path):
    result, runner, _ = run(tmp_path, runner=FakeRunner(fail={"smoke-prod"}), rollback=False)
    assert "rollback-prod" not in runner.stages()
    assert "make rollback-env ENV=prod" in result.message


def test_a_failed_prod_deploy_is_not_rolled_back_by_the_pipeline(tmp_path):
    result, runner, _ = run(tmp_path, runner=FakeRunner(fail={"deploy-prod"}))
    assert runner.stages()[-1] == "deploy-prod"
    assert result.stages[-1].status == "not run"
    assert "previous release live" in result.message


# --- selecting stages --------------------------------------------------------


def test_skip_and_from_select_stages():
    assert pipeline.select_stages(skip=["lint"])[0] == "unit"
    assert pipeline.select_stages(start="build") == ["build", "deploy-test", "smoke-test", "deploy-prod", "smoke-prod"]
    assert pipeline.select_stages(skip=["smoke-test"], start="deploy-test") == [
        "deploy-test",
        "deploy-prod",
        "smoke-prod",
    ]
    assert pipeline.select_stages(end="smoke-test")[-1] == "smoke-test"
    assert pipeline.select_stages(start="build", end="build") == ["build"]
    with pytest.raises(ValueError, match="unknown stage"):
        pipeline.select_stages(skip=["deploy"])
    with pytest.raises(ValueError, match="comes after"):
        pipeline.select_stages(start="deploy-prod", end="build")


def test_skipped_stages_are_reported_and_not_run(tmp_path):
    selected = pipeline.select_stages(skip=["lint", "unit"])
    result, runner, _ = run(tmp_path, selected=selected)
    assert runner.stages()[0] == "site"
    assert [r.status for r in result.stages[:2]] == ["skipped", "skipped"]
    assert result.ok


def test_deploying_without_building_needs_a_ref(tmp_path):
    with pytest.raises(ValueError, match="--ref"):
        run(tmp_path, selected=pipeline.select_stages(start="deploy-test"))
    ctx = context(tmp_path, ref=DIGEST)
    _, runner, _ = run(tmp_path, selected=pipeline.select_stages(start="deploy-prod"), ctx=ctx)
    assert runner.stages() == ["deploy-prod", "smoke-prod"]
    assert f"REF={DIGEST}" in runner.command("deploy-prod")


def test_a_ref_that_is_not_a_digest_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a digest"):
        run(tmp_path, ctx=context(tmp_path, ref="montaiguillon/site:latest"))


# --- timing and reporting ------------------------------------------------------


def test_durations_come_from_the_clock_and_the_total_is_compared_with_five_minutes(tmp_path):
    clock = FakeClock()
    seconds = {"lint": 40.0, "build": 90.0, "deploy-test": 60.0, "deploy-prod": 60.0}
    runner = FakeRunner(clock=clock, seconds=seconds)
    result, _, _ = run(tmp_path, runner=runner, clock=clock)
    durations = {r.name: r.seconds for r in result.stages}
    assert durations["lint"] == 40.0 and durations["build"] == 90.0 and durations["unit"] == 1.0
    assert result.total_seconds == pytest.approx(254.0)
    assert result.within_target
    table = pipeline.render_table(result)
    assert re.search(r"^build\s+passed\s+90\.0 s\s+" + re.escape(DIGEST), table, re.M)
    assert re.search(
        r"^total\s+254\.0 s\s+\(4 min 14 s\)\s+within the 5-minute target \(46\.0 s to spare\)", table, re.M
    )
    assert table.splitlines()[-1] == "OK: every stage passed"


def test_a_slow_run_is_reported_over_target(tmp_path):
    clock = FakeClock()
    result, _, _ = run(tmp_path, runner=FakeRunner(clock=clock, seconds={"build": 400.0}), clock=clock)
    assert not result.within_target
    assert "OVER the 5-minute target by 107.0 s" in pipeline.render_table(result)


def test_the_table_shows_failed_and_not_run_stages_without_durations(tmp_path):
    clock = FakeClock()
    result, _, _ = run(tmp_path, runner=FakeRunner(fail={"deploy-test"}, clock=clock), clock=clock)
    table = pipeline.render_table(result)
    assert re.search(r"^deploy-test\s+failed\s+1\.0 s\s+exit status 3", table, re.M)
    assert re.search(r"^deploy-prod\s+not run\s+after deploy-test failed$", table, re.M)
    assert "the run stopped: no comparison with the 5-minute target" in table
    assert table.splitlines()[-1].startswith("FAILED: stage deploy-test failed")


def test_json_results_hold_every_stage(tmp_path):
    result, _, _ = run(tmp_path, runner=FakeRunner(fail={"smoke-test"}))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["ok"] is False
    assert data["ref"] == DIGEST and data["version"] == "1.2.3" and data["run_id"] == "local-test"
    assert [s["name"] for s in data["stages"]] == list(pipeline.STAGE_NAMES)
    assert data["stages"][5]["status"] == "failed"
    assert data["target_seconds"] == 300.0


def test_main_prints_json_and_exits_1_on_failure(tmp_path, monkeypatch, capsys):
    fake = FakeRunner(fail={"unit"})
    monkeypatch.setattr(pipeline, "run_command", fake)
    monkeypatch.setattr(pipeline, "ROOT", tmp_path)
    status = pipeline.main(["--json", "--version", "9.9.9", "--skip", "lint"])
    captured = capsys.readouterr()
    assert status == 1
    data = json.loads(captured.out)
    assert data["version"] == "9.9.9"
    assert [s["status"] for s in data["stages"][:3]] == ["skipped", "failed", "not run"]
    assert "FAILED: stage unit failed" in captured.err


def test_main_refuses_bad_usage_with_status_2(capsys):
    assert pipeline.main(["--from", "nowhere"]) == 2
    assert pipeline.main(["--version", "no spaces allowed"]) == 2
    assert pipeline.main(["--probe", "--probe-url", "https://site.com/"]) == 2
    assert "loopback" in capsys.readouterr().err


# --- the probe -------------------------------------------------------------------


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


class FakeProbe:
    def __init__(self, failed=0):
        self.report = pipeline.ProbeReport("https://127.0.0.1:9443/", requests=10, failed=failed, versions={"1": 10})
        self.events = []

    def start(self):
        self.events.append("start")

    def stop(self):
        self.events.append("stop")

    def join(self):
        self.events.append("join")


def test_the_probe_runs_exactly_while_prod_deploys(tmp_path):
    probe = FakeProbe()
    order = []

    class Runner(FakeRunner):
        def __call__(self, command, log_path, env, verbose):
            order.append((log_path.stem, list(probe.events)))
            return super().__call__(command, log_path, env, verbose)

    result, _, _ = run(tmp_path, runner=Runner(), probe_factory=lambda: probe)
    during = dict(order)
    assert during["deploy-test"] == [] and during["deploy-prod"] == ["start"]
    assert probe.events == ["start", "stop", "join"]
    assert result.probe.requests == 10 and result.ok
    assert "10 request(s)" in pipeline.render_table(result)


def test_failed_probe_requests_fail_the_run_even_when_every_stage_passed(tmp_path):
    result, _, _ = run(tmp_path, probe_factory=lambda: FakeProbe(failed=3))
    assert all(r.status == "passed" for r in result.stages)
    assert not result.ok
    assert "3 request(s) to prod failed" in result.message


# --- inputs ------------------------------------------------------------------------


def test_the_default_version_is_a_docker_tag_made_of_describe_and_utc_time():
    now = datetime.datetime(2026, 11, 26, 9, 30, 5, tzinfo=datetime.UTC)
    assert pipeline.default_version("v1.2-3-g9b1c2d3", "9b1c2d3e4f5a", now) == "v1.2-3-g9b1c2d3-20261126T093005Z"
    assert pipeline.default_version("9b1c2d3", "9b1c2d3e4f5a-dirty", now) == "9b1c2d3-dirty-20261126T093005Z"
    assert pipeline.default_version("feature/x+y", "r", now) == "feature-x-y-20261126T093005Z"
    assert pipeline.VERSION_PATTERN.match(pipeline.default_version("", "r", now))


def test_the_run_id_is_the_github_run_url_or_a_local_id():
    github = {"GITHUB_RUN_ID": "42", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "m/infra"}
    assert pipeline.default_run_id(github) == "https://github.com/m/infra/actions/runs/42"
    now = datetime.datetime(2026, 11, 26, 9, 30, 5, tzinfo=datetime.UTC)
    assert re.fullmatch(r"local-alice@.+-20261126T093005Z", pipeline.default_run_id({"USER": "alice"}, now))


def test_the_headline_is_read_from_the_content_module(tmp_path):
    content = tmp_path / "content.py"
    content.write_text('TITLE = "x"\nHEADLINE = "Fête au village"\n')
    assert pipeline.read_headline(content) == "Fête au village"
    assert pipeline.read_headline(tmp_path / "missing.py") == ""
    assert pipeline.read_headline(ROOT / "app" / "montaiguillon_site" / "content.py")


# --- running a command -----------------------------------------------------------------


def test_run_command_logs_the_output_and_returns_the_exit_status(tmp_path, monkeypatch):
    seen = {}

    class FakePopen:
        def __init__(self, command, **kwargs):
            seen.update(command=command, **kwargs)
            self.stdout = io.StringIO("line one\nline two\n")

        def wait(self):
            return 4

    monkeypatch.setattr(pipeline.subprocess, "Popen", FakePopen)
    log = tmp_path / "logs" / "unit.log"
    status, output = pipeline.run_command(["make", "unit-infra"], log, {"PY_COLORS": "0"})
    assert (status, output) == (4, "line one\nline two\n")
    assert log.read_text() == "$ make unit-infra\nline one\nline two\n"
    assert seen["cwd"] == pipeline.ROOT and seen["env"]["PY_COLORS"] == "0"
    assert seen["stdin"] is subprocess.DEVNULL and seen["stderr"] is subprocess.STDOUT


def test_run_command_reports_a_missing_program(tmp_path):
    status, output = pipeline.run_command(["/nonexistent/program"], tmp_path / "x.log", {})
    assert status == 127 and "No such file" in output


# --- building from another copy of the site (scripts/pipeline-e2e) ------------------------


def test_build_from_another_app_directory_and_expect_its_headline(tmp_path):
    ctx = context(tmp_path, app_dir="/tmp/copy/app", headline="Nouvelle fête")
    _, runner, _ = run(tmp_path, ctx=ctx)
    build_env = next(env for stage, _, env in runner.calls if stage == "build")
    assert build_env["APP_DIR"] == "/tmp/copy/app"
    smoke = runner.command("smoke-prod")
    assert smoke[smoke.index("--expect-text") + 1] == "Nouvelle fête"


def test_the_headline_comes_from_the_app_directory_unless_given(tmp_path, monkeypatch):
    content = tmp_path / "app" / "montaiguillon_site" / "content.py"
    content.parent.mkdir(parents=True)
    content.write_text('HEADLINE = "From the copy"\n')
    monkeypatch.delenv("APP_REVISION", raising=False)
    args = pipeline.parse_args(["--app-dir", str(tmp_path / "app"), "--version", "1"])
    assert pipeline.build_context(args, environ={}).headline == "From the copy"
    args = pipeline.parse_args(["--app-dir", str(tmp_path / "app"), "--version", "1", "--headline", "Given"])
    assert pipeline.build_context(args, environ={}).headline == "Given"


def _load_e2e():
    loader = importlib.machinery.SourceFileLoader("mtg_pipeline_e2e", str(ROOT / "scripts" / "pipeline-e2e"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_e2e_headline_rewrite_changes_only_the_headline():
    e2e = _load_e2e()
    source = (ROOT / "app" / "montaiguillon_site" / "content.py").read_text()
    changed = e2e.with_headline(source, 'L\'été "au" village')
    namespace = {}
    exec(compile(changed, "content.py", "exec"), namespace)  # noqa: S102 (our own module's text)
    assert namespace["HEADLINE"] == 'L\'été "au" village'
    assert changed.replace(next(line for line in changed.splitlines() if line.startswith("HEADLINE")), "") == (
        source.replace(next(line for line in source.splitlines() if line.startswith("HEADLINE")), "")
    )
    with pytest.raises(ValueError, match="found 0"):
        e2e.with_headline("TITLE = 'x'\n", "y")
