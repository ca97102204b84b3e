"""Workflow inputs and tag names cannot steer the pipeline (issue 20, item 2).

A dispatch input or a tag name is checked by scripts/workflow-guard against a
strict pattern, reaches commands only through `env:`, and make reads it as a
shell variable: `$(shell ...)` in a value is never run. Jobs that hold deploy
secrets use no pip cache and install hash-pinned tools only.
"""

import os
import re
import shutil
import subprocess

import pytest
import sourcefile
import yaml

ROOT = sourcefile.ROOT
guard = sourcefile.load("scripts/workflow-guard", "workflow_guard")
WORKFLOW_DIR = ROOT / ".github" / "workflows"
GUARD = str(ROOT / "scripts" / "workflow-guard")
# An env value someone outside the maintainers can choose (a dispatch input, a ref name).
# An expression whose value can carry an input's text (a comparison such as `inputs.environment == 'prod'`
# only chooses between values written in the workflow).
UNTRUSTED = re.compile(
    r"\$\{\{[^}]*?\b(inputs\.\w+(?!\s*[=!]=)|github\.event\.[\w.]+|github\.head_ref|github\.ref_name)\b[^}]*\}\}"
)


def workflow(name):
    data = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_guard(*args, env=None):
    return subprocess.run(
        [GUARD, *args], capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"], **(env or {})}
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENV", "prod"),
        ("ENV", "test"),
        ("TO", ""),
        ("TO", "20261126T093000Z-3f2a9c1d"),
        ("REF", "ghcr.io/owner/montaiguillon-site@sha256:" + "a" * 64),
        ("VERSION", "0123456789abcdef0123456789abcdef01234567"),
        ("VERSION", "v1.2.3-rc.1"),
    ],
)
def test_the_guard_accepts_what_the_pipeline_produces(name, value):
    assert guard.check_value(name, value) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENV", "staging"),
        ("ENV", "prod\n"),
        ("TO", "20261126T093000Z-3f2a9c1d$(id)"),
        ("TO", "previous; rm -rf /"),
        ("REF", "ghcr.io/owner/site:latest"),
        ("VERSION", "v1$(id)"),
        ("VERSION", "v1.2.3 -e app_image=evil"),
    ],
)
def test_the_guard_refuses_a_value_outside_its_pattern_naming_the_input(name, value):
    result = run_guard("inputs", name, env={name: value})
    assert result.returncode == 1
    assert f"refused: {name}: {value!r} is not" in result.stderr
    assert "nothing was run" in result.stderr


def test_the_guard_refuses_an_unset_or_unknown_input():
    assert "ENV: not set" in run_guard("inputs", "ENV").stderr
    unknown = run_guard("inputs", "SHELL_COMMAND", env={"SHELL_COMMAND": "x"})
    assert unknown.returncode == 1 and "SHELL_COMMAND: not a known workflow input" in unknown.stderr


@pytest.fixture
def repo(tmp_path):
    """A git repository whose origin/main has one commit and a branch with one more."""

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q", "-b", "main")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "reviewed")
    reviewed = git("rev-parse", "HEAD").strip()
    git("update-ref", "refs/remotes/origin/main", reviewed)
    git("checkout", "-q", "-b", "topic")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "unreviewed")
    return tmp_path, reviewed, git("rev-parse", "HEAD").strip()


def test_a_version_tag_on_main_passes_and_one_off_main_is_refused(repo):
    path, reviewed, unreviewed = repo
    base = {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1.4.0"}
    ok = subprocess.run([GUARD, "ref"], cwd=path, capture_output=True, text=True, check=False,
                        env={"PATH": os.environ["PATH"], **base, "GITHUB_SHA": reviewed})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "v1.4.0: a version tag on main" in ok.stdout
    off = subprocess.run([GUARD, "ref"], cwd=path, capture_output=True, text=True, check=False,
                         env={"PATH": os.environ["PATH"], **base, "GITHUB_SHA": unreviewed})  # fmt: skip
    assert off.returncode == 1
    assert "its commit is not on main" in off.stderr


def test_a_tag_that_is_not_a_plain_version_is_refused_before_git_is_asked():
    asked = []
    with pytest.raises(guard.Refused, match=r"'v1\$\(id\)' is not a version tag"):
        guard.check_tag("tag", "v1$(id)", lambda: asked.append(1))
    assert asked == []
    assert guard.check_tag("branch", "main", lambda: asked.append(1)).startswith("branch push")


@pytest.mark.parametrize(
    ("target", "env"),
    [
        ("deploy-to", {"ENV": "test", "REF": "x@sha256:1$(shell touch {marker})"}),
        ("rollback-env", {"ENV": "prod", "TO": "$(shell touch {marker})"}),
        ("backup-now", {"ENV": "$(shell touch {marker})"}),
        ("drill", {"ENV": "$(shell touch {marker})"}),
        ("maintenance", {"ENV": "prod", "MODE": "$(shell touch {marker})"}),
        ("smoke-site", {"ENV": "prod", "URL": "https://x", "EXPECT_VERSION": "v1$(shell touch {marker})"}),
    ],
)
def test_make_reads_outside_values_as_data_not_as_make_code(tmp_path, target, env):
    """make expands $(...) inside any variable it references; the verbs read these as "$$VAR" only."""
    marker = tmp_path / "expanded"
    values = {k: v.format(marker=marker) for k, v in env.items()}
    result = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, **values}
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), f"make {target} expanded an outside value as make code"


def _run_steps():
    for path in sorted(WORKFLOW_DIR.glob("*.yml")):
        for job_name, job in workflow(path.name)["jobs"].items():
            for index, step in enumerate(job.get("steps", [])):
                yield path.name, job_name, job, index, step


def test_no_run_script_interpolates_an_expression():
    for name, job_name, _, _, step in _run_steps():
        if "run" in step:
            assert "${{" not in step["run"], f"{name} {job_name} {step.get('name')!r}: pass values through env:"


def test_untrusted_values_are_checked_before_any_make_command():
    for name in ("rollback.yml", "backup-now.yml", "backup-drill.yml"):
        for job_name, job in workflow(name)["jobs"].items():
            runs = [s.get("run", "") for s in job["steps"]]
            guard_at = next(i for i, r in enumerate(runs) if r.startswith("scripts/workflow-guard inputs"))
            first_make = next(i for i, r in enumerate(runs) if r.startswith("make "))
            assert guard_at < first_make, f"{name} {job_name}"
            untrusted = [k for k, v in job["env"].items() if UNTRUSTED.search(str(v))]
            assert untrusted, name
            assert set(untrusted) <= set(runs[guard_at].split()[2:]), f"{name}: {untrusted} not all checked"


def test_publish_checks_the_tag_before_it_builds():
    steps = workflow("cd.yml")["jobs"]["publish"]["steps"]
    checkout = steps[0]
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s.get("run", "") for s in steps]
    assert runs.index("scripts/workflow-guard ref") < runs.index("scripts/publish-image")


def test_jobs_holding_deploy_secrets_use_no_pip_cache_and_hash_pinned_tools():
    holding = []
    for path in sorted(WORKFLOW_DIR.glob("*.yml")):
        for job_name, job in workflow(path.name)["jobs"].items():
            text = yaml.safe_dump(job)
            if "secrets.DEPLOY_SSH_KEY" not in text:
                continue
            holding.append(f"{path.name}:{job_name}")
            assert "cache" not in text, f"{path.name} {job_name}: no pip cache where deploy secrets are"
            assert job["env"]["TOOLS"] == "deploy", f"{path.name} {job_name}"
            assert any(s.get("run") == "make deploy-tools" for s in job["steps"]), f"{path.name} {job_name}"
    assert holding == [
        "backup-drill.yml:drill",
        "backup-now.yml:backup",
        "cd.yml:test",
        "cd.yml:prod",
        "rollback.yml:rollback",
    ]


@pytest.mark.parametrize(
    "name, must_hold",
    [("requirements-deploy.txt", {"ansible", "ansible-core"}), ("requirements-bootstrap.txt", {"uv"})],
)
def test_what_deploy_jobs_install_is_all_pinned_with_hashes(name, must_hold):
    text = (ROOT / name).read_text()
    requirements = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text, re.M)
    names = {name.lower() for name, _ in requirements}
    assert must_hold <= names
    assert len(requirements) == len(re.findall(r"^[A-Za-z0-9_.-]+==", text, re.M))
    assert "--index-url" not in text and "--extra-index-url" not in text and "--find-links" not in text


def test_deploy_tools_install_by_hash_without_any_cache(tmp_path):
    """What `make deploy-tools` would run: both installs check hashes, neither reads a cache."""
    venv = tmp_path / "venv"
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "deploy-tools", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if " install " in line]
    assert len(installs) == 2, plan
    pip_install, uv_install = installs
    assert "requirements-bootstrap.txt" in pip_install and "--no-cache-dir" in pip_install
    assert "requirements-deploy.txt" in uv_install and "--no-cache " in uv_install
    assert all("--require-hashes" in line for line in installs), plan


def test_zizmor_finds_nothing_at_medium_or_above():
    zizmor = shutil.which("zizmor") or str(ROOT / ".venv" / "bin" / "zizmor")
    result = subprocess.run(
        [zizmor, "--offline", "--min-severity", "medium", "--no-progress", str(WORKFLOW_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
