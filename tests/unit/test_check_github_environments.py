"""scripts/check-github-environments on canned GitHub API answers (never the network)."""

import importlib.machinery
import importlib.util
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    loader = importlib.machinery.SourceFileLoader("mtg_check_envs", str(ROOT / "scripts" / "check-github-environments"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


check = _load()
REPO = "montaiguillon/infra"
SECRETS = {
    "total_count": 3,
    "secrets": [{"name": n} for n in ("DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS", "ANSIBLE_VAULT_PASSWORD")],
}
PRODUCTION = {
    "name": "production",
    "can_admins_bypass": False,
    "protection_rules": [
        {
            "id": 1,
            "type": "required_reviewers",
            "prevent_self_review": True,
            "reviewers": [{"type": "User", "reviewer": {"login": "ops"}}],
        },
        {"id": 2, "type": "branch_policy"},
    ],
    "deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True},
}
POLICIES = {
    "total_count": 2,
    "branch_policies": [{"id": 1, "name": "main", "type": "branch"}, {"id": 2, "name": "v*", "type": "tag"}],
}
GOOD = {
    f"/repos/{REPO}/actions/secrets": {"total_count": 0, "secrets": []},
    f"/repos/{REPO}/environments/test": {"name": "test", "protection_rules": [], "deployment_branch_policy": None},
    f"/repos/{REPO}/environments/test/secrets": SECRETS,
    f"/repos/{REPO}/environments/production": PRODUCTION,
    f"/repos/{REPO}/environments/production/secrets": SECRETS,
    f"/repos/{REPO}/environments/production/deployment-branch-policies": POLICIES,
}  # fmt: skip


def run(answers, environ=None, argv=("--repo", REPO)):
    out = io.StringIO()
    rc = check.main(list(argv), {"GH_TOKEN": "t0ken"} if environ is None else environ, lambda token: answers.get, out)
    return rc, out.getvalue()


def test_settings_as_documented_pass():
    rc, out = run(GOOD)
    assert rc == 0
    assert "test and production are set as docs/pipeline.md says" in out


@pytest.mark.parametrize(
    ("path", "answer", "problem"),
    [
        ("environments/production", {**PRODUCTION, "protection_rules": []}, "production: no required reviewers"),
        ("environments/production", {**PRODUCTION, "can_admins_bypass": True}, "administrators can bypass"),
        (
            "environments/production",
            {**PRODUCTION, "deployment_branch_policy": None},
            "deployments are not limited to selected branches and tags",
        ),
        (
            "environments/production/deployment-branch-policies",
            {"branch_policies": [*POLICIES["branch_policies"], {"name": "*", "type": "branch"}]},
            "deployment refs are branch *, branch main, tag v*; expected exactly branch main and tag v*",
        ),
        ("environments/production", None, "production: the environment does not exist"),
        ("environments/test/secrets", {"secrets": SECRETS["secrets"][1:]}, "test: secret DEPLOY_SSH_KEY is missing"),
        ("actions/secrets", SECRETS, "repository: secret ANSIBLE_VAULT_PASSWORD is set for the whole repository"),
    ],
)
def test_each_departure_is_named(path, answer, problem):
    rc, out = run({**GOOD, f"/repos/{REPO}/{path}": answer})
    assert rc == 1
    assert problem in out


def test_without_a_token_it_says_it_skipped():
    rc, out = run(GOOD, environ={})
    assert rc == 0
    assert "SKIPPED" in out
    assert run(GOOD, environ={}, argv=("--repo", REPO, "--require-token"))[0] == 2


def test_the_repository_must_be_named():
    rc, out = run(GOOD, argv=())
    assert rc == 2
    assert "--repo owner/name" in out
