#!/usr/bin/env python3
"""Time the local pipeline twice, cold then warm, and say where the time goes.

    python benchmarks/pipeline.py [--no-reset] [--pipeline CMD] [-- PIPELINE ARGS...]
    make bench-pipeline BENCH_ARGS='-- --probe'

Needs the lab up and deploy.yml working: it releases twice to test and prod.

What "cold" means here, precisely (reset_cold_caches below does exactly this):
  - the site image's build cache on this machine is gone: every local image
    labelled org.opencontainers.image.title=montaiguillon-site is removed (all
    its tags). Docker's classic builder (this engine, without buildx) keeps its
    cache as those images' parent layers, so the apt-get layer (Debian's
    python3, python3-pymysql, gunicorn) and the code layers are built again.
    The base image debian:bookworm stays (`make images` builds it once per machine).
  - the lab registry forgets the site: every manifest of montaiguillon/site is
    deleted through the registry API (deletes are enabled in
    lab/images/registry/config.yml). Its blobs stay until a garbage collection,
    but a rebuilt apt-get layer has a new digest anyway, so the push sends it
    in full and both servers pull it in full.
  - the lab itself stays up and provisioned (servers, proxy, MariaDB, the
    previous release running): cold is "the first release of the day after a
    fresh clone", not "a lab from nothing" (that is `make lab`, timed by
    benchmarks/provision.py). Python virtualenv, the linters' caches, Ansible's
    fact cache and SSH connections are left as they are.
"Warm" is the run that follows at once: same machine, caches filled, only the
version (hence the version label and environment layers) differs.

Prints both stage tables, each stage's share of its run, which stage dominates
and why, and the verdict against the targets (warm under 5 min, cold under
15 min). Results are saved in benchmarks/results/pipeline-<time>.json.
"""

import argparse
import base64
import datetime
import json
import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"cold": 900.0, "warm": 300.0}
SITE_LABEL = "org.opencontainers.image.title=montaiguillon-site"
REGISTRY = "http://127.0.0.1:5000"
REPOSITORY = "montaiguillon/site"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)

# Why a job takes its time, by a part of its name as act labels it (scripts/pipeline runs cd.yml with act).
WHY = {
    "Lint": "a fresh virtualenv from requirements.txt, then ansible-lint over every playbook and role; CPU-bound",
    "Sanity": "a fresh virtualenv, then ansible-test sanity of plugins/ in its own virtualenvs, and the alert rules",
    "Unit tests": "a fresh virtualenv from requirements.txt, then pytest of the modules and helpers",
    "Site tests": "a fresh virtualenv from requirements.txt, then pytest of the site with an in-memory database",
    "Build the site image": "docker build, not published: the layers publish reuses",
    "Publish": (
        "docker build then push: cold re-runs the apt-get layer (Debian archive download and unpack of python3, "
        "python3-pymysql, gunicorn) and pushes every layer; warm reuses it and sends only the small code layers"
    ),
    "Deploy to test": (
        "the deploy tools' virtualenv, then blue/green on dev.site: Ansible over SSH, pull of the new layers, a "
        "one-off migration container, start of the idle colour, health checks, proxy switch, verify, smoke tests"
    ),
    "Promote to prod": "the same on site.com (plus the pre-deploy backup snapshot)",
}


def why(name):
    return next((text for part, text in WHY.items() if part in name), "")


# --------------------------------------------------------------------------
# Cold caches


def run(command, check=False):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=check)


def reset_cold_caches(registry=REGISTRY, say=print):
    """Remove the site image's build cache and the lab registry's site manifests (see the module doc)."""
    images = run(["docker", "image", "ls", "--filter", f"label={SITE_LABEL}", "--format", "{{.Repository}}:{{.Tag}}"])
    references = sorted({line for line in images.stdout.split() if not line.endswith(":<none>")})
    removed = 0
    for reference in references:
        result = run(["docker", "image", "rm", reference])
        if result.returncode == 0:
            removed += 1
        else:
            say(f"  kept {reference}: {result.stderr.strip()}")
    say(f"cold: removed {removed} local site image tag(s) and their build layers")
    dangling = run(["docker", "image", "ls", "-q", "--filter", f"label={SITE_LABEL}"]).stdout.split()
    for image_id in sorted(set(dangling)):
        run(["docker", "image", "rm", image_id])
    say(f"cold: deleted {delete_registry_manifests(registry)} manifest(s) of {REPOSITORY} from the lab registry")


def lab_registry_credentials(environ=None):
    """The lab registry's account (user, password), from the password `make lab-up` generated.

    LAB_REGISTRY_PASSWORD_FILE, else .generated/registry/password beside
    LAB_INVENTORY, else the default lab's (as lab/bin/release reads it).
    """
    environ = os.environ if environ is None else environ
    if environ.get("LAB_REGISTRY_PASSWORD_FILE"):
        path = Path(environ["LAB_REGISTRY_PASSWORD_FILE"])
    elif environ.get("LAB_INVENTORY"):
        path = Path(environ["LAB_INVENTORY"]).parent / ".generated/registry/password"
    else:
        path = ROOT / "inventories/lab/.generated/registry/password"
    return environ.get("LAB_REGISTRY_USER", "montaiguillon"), path.read_text().strip()


def delete_registry_manifests(
    registry=REGISTRY, repository=REPOSITORY, opener=urllib.request.urlopen, credentials=None
):
    """Delete every tagged manifest of a repository in a registry (v2 API); returns how many.

    The lab registry refuses anonymous requests: each carries the lab's
    account (``credentials``: user and password, default lab_registry_credentials()).
    """
    if not registry.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"{registry}: only the lab registry on 127.0.0.1 is reset")
    user, password = credentials or lab_registry_credentials()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    try:
        tags_list = urllib.request.Request(f"{registry}/v2/{repository}/tags/list", headers=auth)  # noqa: S310
        with opener(tags_list, timeout=10) as response:
            tags = json.load(response).get("tags") or []
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return 0
        raise
    digests = set()
    for tag in tags:
        request = urllib.request.Request(  # noqa: S310 (registry checked above: http on loopback)
            f"{registry}/v2/{repository}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_TYPES, **auth}
        )
        with opener(request, timeout=10) as response:
            digest = response.headers.get("Docker-Content-Digest")
        if digest:
            digests.add(digest)
    for digest in sorted(digests):
        url = f"{registry}/v2/{repository}/manifests/{digest}"
        request = urllib.request.Request(url, method="DELETE", headers=auth)  # noqa: S310 (http on loopback, checked above)
        with opener(request, timeout=10):
            pass
    return len(digests)


# --------------------------------------------------------------------------
# Runs and analysis


def run_pipeline(command, extra_args):
    """Run the pipeline with --json; its progress goes to our stderr, its JSON comes back."""
    proc = subprocess.run([*command, "--json", *extra_args], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "stages": [], "total_seconds": 0.0, "message": f"no JSON (exit status {proc.returncode})"}


def timed_stages(result):
    return [s for s in result.get("stages", []) if s["status"] in ("passed", "failed")]


def shares(result):
    """{stage: share of the run's total time} for the stages that ran."""
    total = result.get("total_seconds") or sum(s["seconds"] for s in timed_stages(result)) or 1.0
    return {s["name"]: s["seconds"] / total for s in timed_stages(result)}


def dominant(result):
    stages = timed_stages(result)
    return max(stages, key=lambda s: s["seconds"]) if stages else None


def render(name, result):
    lines = [f"== {name} run: version {result.get('version', '?')}, {'ok' if result.get('ok') else 'FAILED'}"]
    width = max([len("stage"), *(len(stage["name"]) for stage in result.get("stages", []))])
    lines.append(f"{'stage':<{width}} {'status':<8} {'seconds':>8} {'share':>6}")
    share = shares(result)
    for stage in result.get("stages", []):
        label = f"{stage['name']:<{width}} {stage['status']:<8}"
        if stage["name"] in share:
            lines.append(f"{label} {stage['seconds']:8.1f} {share[stage['name']]:6.1%}")
        else:
            lines.append(f"{label} {'':>8} {'':>6}")
    total, target = result.get("total_seconds", 0.0), TARGETS[name]
    verdict = "within" if total <= target else "OVER"
    lines.append(f"{'total':<{width}} {'':<8} {total:8.1f}        {verdict} the {target / 60:.0f}-minute target")
    probe = result.get("probe")
    if probe:
        lines.append(f"probe: {probe['requests']} request(s) to prod while it deployed, {probe['failed']} failed")
    if not result.get("ok"):
        lines.append(f"FAILED: {result.get('message', '')}")
    return "\n".join(lines)


def explain(runs):
    """Which stage dominates each run, and why, with the cold/warm difference per stage."""
    lines = []
    for name, result in runs.items():
        top = dominant(result)
        if top is None:
            continue
        lines.append(
            f"{name}: {top['name']} dominates ({top['seconds']:.1f} s, {shares(result)[top['name']]:.0%}): "
            f"{why(top['name']) or 'see its log: ' + top.get('log', '')}"
        )
    if "cold" in runs and "warm" in runs:
        cold = {s["name"]: s["seconds"] for s in timed_stages(runs["cold"])}
        warm = {s["name"]: s["seconds"] for s in timed_stages(runs["warm"])}
        deltas = sorted(((cold[n] - warm[n], n) for n in cold.keys() & warm.keys()), key=lambda d: (-d[0], d[1]))
        if deltas:
            lines.append(
                "cold minus warm: " + ", ".join(f"{n} {d:+.1f} s" for d, n in deltas) + " (what the caches save)"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="scripts/pipeline", help="the pipeline command (a fake one for tests)")
    parser.add_argument("--no-reset", action="store_true", help="do not empty the caches before the cold run")
    parser.add_argument("--registry", default=REGISTRY, help="the lab registry's API, as this machine reaches it")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="where to save the JSON")
    parser.add_argument("pipeline_args", nargs="*", help="passed to the pipeline (after --)")
    args = parser.parse_args(argv)
    command = shlex.split(args.pipeline)

    def say(text):
        print(text, file=sys.stderr, flush=True)

    if not args.no_reset:
        reset_cold_caches(args.registry, say)
    runs = {}
    for name in ("cold", "warm"):
        say(f"\n######## {name} run")
        # A new headline each run: the warm run ships a release of its own, not the cold one again.
        stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
        runs[name] = run_pipeline(command, ["--headline", f"Benchmark, {name} run at {stamp}", *args.pipeline_args])
        if not runs[name].get("ok"):
            say(f"{name} run failed: {runs[name].get('message')}; no warm run")
            break

    print("\n\n".join(render(name, result) for name, result in runs.items()))
    print()
    print(explain(runs))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"pipeline-{stamp}.json"
    path.write_text(json.dumps({"reset": not args.no_reset, "runs": runs}, indent=2) + "\n")
    print(f"\nsaved {path}")
    met = all(r.get("ok") and r.get("total_seconds", 0) <= TARGETS[n] for n, r in runs.items())
    return 0 if met and len(runs) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
