"""bluegreen_release with topology swarm, driven against an in-memory swarm manager.

The fake swarm behaves as Swarm does for what the module relies on: a new
service's tasks run once their image is healthy; an update rolls out (one
"updating" read, then its outcome) and, when the new image is unhealthy, Swarm
rolls the spec back (``rollback_completed``) and the old release keeps its
tasks; secrets in use cannot be removed. Time is a fake clock.
"""

import copy
from datetime import UTC, datetime, timedelta

import pytest
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.ledger import ReleaseLedger
from ansible.module_utils.montaiguillon.deploy.probe import ProbeError
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure

REGISTRY = "lab-registry:5000/montaiguillon/site"
HEALTHCHECK = {"Test": ["CMD", "python3", "-m", "site", "healthcheck"], "Interval": 10_000_000_000}


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeEngine:
    """The manager's own engine: images (pulled from a fake registry) and one-off containers."""

    def __init__(self):
        self.images, self.registry, self.oneoffs = {}, {}, []
        self.oneoff_result = (0, "migrations applied")

    def add_image(self, tag, digest, image_id, healthcheck=HEALTHCHECK, user="10001:10001", local=False):
        attrs = {
            "Id": image_id,
            "RepoTags": [f"{REGISTRY}:{tag}"],
            "RepoDigests": [f"{REGISTRY}@{digest}"] if digest else [],
            "Config": {"Labels": {"org.opencontainers.image.version": tag}, "Healthcheck": healthcheck, "User": user},
        }
        for ref in (f"{REGISTRY}:{tag}", f"{REGISTRY}@{digest}"):
            (self.images if local else self.registry)[ref] = attrs

    def local_image(self, ref):
        return copy.deepcopy(self.images.get(ref))

    def pull(self, ref):
        if ref not in self.registry and ref not in self.images:
            raise DockerError(f"pull of {ref} failed: manifest unknown")
        self.images[ref] = self.registry.get(ref) or self.images[ref]
        return copy.deepcopy(self.images[ref])

    def run_oneoff(self, name, image, command, environment, networks, labels=None, timeout=600, options=None):
        self.oneoffs.append({"name": name, "image": image, "env": environment, "networks": networks})
        return self.oneoff_result


class FakeSwarm:
    def __init__(self):
        self.manager = True
        self.services, self.secrets, self.applied, self.removed = {}, {}, [], []
        self.unhealthy = set()  # image refs whose tasks never become healthy
        self.pending = None
        self.updates = 0

    def check_manager(self):
        if not self.manager:
            raise DockerError("site_topology is swarm but this Docker engine is not a swarm manager")

    def service(self, name):
        if self.pending:
            self.pending, outcome = None, self.pending
            self.services[name]["UpdateStatus"] = {"State": "updating", "StartedAt": outcome[1]}
            self.services[name]["_outcome"] = outcome
            return copy.deepcopy(self._public(name))
        attrs = self.services.get(name)
        if attrs and attrs.get("_outcome"):
            state, started, spec = attrs.pop("_outcome")
            attrs["UpdateStatus"] = {"State": state, "StartedAt": started, "Message": f"update {state}"}
            if state == "completed":
                attrs["Spec"] = spec
        return copy.deepcopy(self._public(name)) if attrs else None

    def _public(self, name):
        return {k: v for k, v in self.services[name].items() if not k.startswith("_")}

    def tasks(self, name):
        attrs = self.services.get(name)
        if not attrs:
            return []
        spec = attrs["Spec"]
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        state = "starting" if image in self.unhealthy else "running"
        count = spec["Mode"]["Replicated"]["Replicas"]
        return [{"NodeID": f"node{i + 1}", "DesiredState": "running", "Status": {"State": state}} for i in range(count)]

    def nodes(self):
        return {"node1": "swarm1", "node2": "swarm2", "node3": "swarm3"}

    def apply(self, name, spec):
        self.applied.append(spec)
        new = {
            "Spec": {
                "Labels": dict(spec["labels"]),
                "Mode": {"Replicated": {"Replicas": spec["replicas"]}},
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": spec["image"],
                        "Secrets": [{"SecretID": r["id"]} for r in spec["secrets"]],
                    }
                },
            }
        }
        if name not in self.services:
            self.services[name] = new
            return
        self.updates += 1
        outcome = "rollback_completed" if spec["image"] in self.unhealthy else "completed"
        self.pending = (outcome, f"2026-12-05T10:00:{self.updates:02d}Z", new["Spec"])

    def remove_service(self, name):
        self.removed.append(name)
        self.services.pop(name, None)

    def ensure_secret(self, name, value, app, release):
        self.secrets.setdefault(name, {"id": f"id-{name}", "value": value, "app": app})
        return self.secrets[name]["id"]

    def remove_unused_secrets(self, app, in_use):
        gone = sorted(n for n, s in self.secrets.items() if s["app"] == app and s["id"] not in in_use)
        for name in gone:
            del self.secrets[name]
        return gone


class Answer:
    def __init__(self, status):
        self.status = status

    def describe(self):
        return f"HTTP {self.status}"


class FakeProbe:
    def __init__(self, swarm):
        self.swarm = swarm
        self.urls = []
        self.refused = False

    def get(self, url, timeout=2.0, host=None, verify_tls=True):
        self.urls.append(url)
        if self.refused:
            raise ProbeError(f"GET {url}: ConnectionRefusedError: [Errno 111] Connection refused")
        running = self.swarm.tasks("app")
        return Answer(200 if any(t["Status"]["State"] == "running" for t in running) else 502)


class Harness:
    def __init__(self, module, tmp_path):
        self.module, self.conf_dir, self.state_dir = module, tmp_path / "conf.d", tmp_path / "state"
        self.conf_dir.mkdir()
        self.engine, self.swarm, self.clock = FakeEngine(), FakeSwarm(), FakeClock()
        self.probe = FakeProbe(self.swarm)
        self.warnings = []
        self._now = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
        self.engine.add_image("1.0", "sha256:d1", "sha256:1111111111aa")
        self.engine.add_image("2.0", "sha256:d2", "sha256:2222222222bb")

    def now(self):
        self._now += timedelta(minutes=1)
        return self._now

    def params(self, **overrides):
        params = {key: spec.get("default") for key, spec in self.module.argument_spec().items()}
        params.update(
            topology="swarm",
            replicas=3,
            networks=["montaiguillon_swarm"],
            proxy_conf_dir=str(self.conf_dir),
            state_dir=str(self.state_dir),
            requested_by="alice",
            env={"APP_DB_HOST": "mysql", "DEBUG": False},
            secret_files={"APP_DB_PASSWORD": "s3cret"},
            migrate_command=["python3", "-m", "site", "migrate"],
            migrate_secret_env={"APP_MIGRATE_PASSWORD": "m1grate"},
        )
        params.update(overrides)
        return params

    def run(self, check_mode=False, **overrides):
        manager = self.module.SwarmRelease(
            self.params(**overrides),
            self.engine,
            self.swarm,
            check_mode=check_mode,
            probe=self.probe,
            clock=self.clock.monotonic,
            sleep=self.clock.sleep,
            now=self.now,
            warn=self.warnings.append,
        )
        return manager.run()

    def deploy(self, tag, **overrides):
        return self.run(image=f"{REGISTRY}:{tag}", **overrides)

    def ledger(self):
        return ReleaseLedger.in_dir(str(self.state_dir)).read()

    def live(self):
        return self.swarm.services["app"]["Spec"]["Labels"]["montaiguillon.release"]


@pytest.fixture
def h(load_module, tmp_path):
    return Harness(load_module("bluegreen_release"), tmp_path)


def steps(result):
    return [step["step"] for step in result["steps"]]


def test_first_deploy_creates_a_dnsrr_ready_service_by_digest_gated_on_health(h):
    result = h.deploy("1.0")
    assert result["changed"] is True
    assert steps(result) == [
        "lock",
        "pull",
        "plan",
        "secrets",
        "migrate",
        "rollout",
        "verify",
        "ledger",
        "retire",
        "unlock",
    ]
    spec = h.swarm.applied[0]
    assert spec["image"] == f"{REGISTRY}@sha256:d1"  # every node pulls the bits the manager tested
    assert spec["replicas"] == 3
    assert spec["policy"]["update"]["order"] == "start-first"
    assert spec["policy"]["update"]["failure_action"] == "rollback"
    assert spec["healthcheck"]["test"] == HEALTHCHECK["Test"]
    assert spec["healthcheck"]["interval"] == 1_000_000_000  # the image's 10 s would make a rollout crawl
    assert [entry["outcome"] for entry in h.ledger()] == ["success"]
    assert h.ledger()[0]["image"] == f"{REGISTRY}@sha256:d1"


def test_secrets_are_docker_secrets_named_by_release_and_never_in_the_environment(h):
    h.deploy("1.0")
    spec = h.swarm.applied[0]
    assert spec["env"]["APP_DB_PASSWORD_FILE"] == "/run/secrets/APP_DB_PASSWORD"
    assert "s3cret" not in str(spec["env"]) and "s3cret" not in str(spec["labels"])
    (secret,) = spec["secrets"]
    assert (secret["file"], secret["uid"], secret["gid"]) == ("APP_DB_PASSWORD", "10001", "10001")
    assert h.swarm.secrets[secret["name"]]["value"] == "s3cret"
    assert secret["name"].startswith(f"app-{h.live()}-")
    # the migration, a one-off container on the manager, gets the values themselves
    assert h.engine.oneoffs[0]["env"]["APP_DB_PASSWORD"] == "s3cret"
    assert h.engine.oneoffs[0]["env"]["APP_MIGRATE_PASSWORD"] == "m1grate"


def test_the_same_release_again_changes_nothing_and_writes_no_ledger_entry(h):
    h.deploy("1.0")
    again = h.deploy("1.0")
    assert again["changed"] is False
    assert "already runs on 3 tasks" in again["msg"]
    assert len(h.swarm.applied) == 1 and len(h.ledger()) == 1
    assert len(h.swarm.secrets) == 1  # the live release's secret is kept


def test_a_rotated_secret_is_a_new_release_and_the_old_secret_goes(h):
    h.deploy("1.0")
    first = h.live()
    result = h.deploy("1.0", secret_files={"APP_DB_PASSWORD": "n3w"})
    assert result["changed"] is True and h.live() != first
    assert [s["value"] for s in h.swarm.secrets.values()] == ["n3w"]


def test_an_unhealthy_release_is_rolled_back_by_swarm_and_the_old_one_keeps_serving(h):
    h.deploy("1.0")
    first = h.live()
    h.swarm.unhealthy.add(f"{REGISTRY}@sha256:d2")
    with pytest.raises(ReleaseFailure) as failure:
        h.deploy("2.0")
    assert "Swarm rolled the service back" in str(failure.value)
    assert f"release {first} still serves on 3 tasks" in str(failure.value)
    assert h.live() == first
    assert [entry["outcome"] for entry in h.ledger()] == ["success", "rolled_back"]


def test_failed_migrations_roll_nothing_out(h):
    h.deploy("1.0")
    h.engine.oneoff_result = (1, "duplicate column")
    with pytest.raises(ReleaseFailure) as failure:
        h.deploy("2.0")
    assert "migrations failed" in str(failure.value) and "duplicate column" in str(failure.value)
    assert len(h.swarm.applied) == 1
    assert h.ledger()[-1]["outcome"] == "failed"


def test_a_first_release_that_never_gets_healthy_leaves_no_service_behind(h):
    h.swarm.unhealthy.add(f"{REGISTRY}@sha256:d1")
    with pytest.raises(ReleaseFailure) as failure:
        h.deploy("1.0", health_timeout=5)
    assert "did not finish" in str(failure.value) and "was removed" in str(failure.value)
    assert h.swarm.removed == ["app"] and "app" not in h.swarm.services


def test_an_image_without_a_registry_digest_is_refused_before_anything_changes(h):
    h.engine.add_image("local", None, "sha256:3333333333cc", local=True)
    with pytest.raises(ReleaseFailure) as failure:
        h.deploy("local", pull=False)
    assert "must come from a registry" in str(failure.value)
    assert h.swarm.applied == [] and h.engine.oneoffs == [] and h.swarm.secrets == {}


def test_an_image_without_a_health_check_is_refused_unless_one_is_given(h):
    h.engine.add_image("3.0", "sha256:d3", "sha256:3333333333cc", healthcheck=None)
    with pytest.raises(ReleaseFailure) as failure:
        h.deploy("3.0")
    assert "declares no HEALTHCHECK" in str(failure.value)
    assert h.swarm.applied == [] and h.engine.oneoffs == []
    h.deploy("3.0", healthcheck_command=["wget", "-qO-", "http://127.0.0.1:8000/health"])
    assert h.swarm.applied[0]["healthcheck"]["test"] == ["CMD", "wget", "-qO-", "http://127.0.0.1:8000/health"]


def test_rollback_rolls_out_the_previous_release_from_the_ledger_without_migrations(h):
    h.deploy("1.0")
    first = h.live()
    h.deploy("2.0")
    migrations = len(h.engine.oneoffs)
    result = h.run(state="rolled_back")
    assert result["changed"] is True and h.live() == first
    assert h.swarm.applied[-1]["image"] == f"{REGISTRY}@sha256:d1"
    assert len(h.engine.oneoffs) == migrations
    assert h.ledger()[-1]["outcome"] == "rollback"
    assert h.run(state="rolled_back", release=first)["changed"] is False


def test_rollback_with_nothing_earlier_says_so(h):
    h.deploy("1.0")
    with pytest.raises(ReleaseFailure, match="no release to roll back to"):
        h.run(state="rolled_back")


def test_check_mode_changes_nothing(h):
    h.engine.pull(f"{REGISTRY}:1.0")
    result = h.run(check_mode=True, image=f"{REGISTRY}:1.0")
    assert result["changed"] is True and "does not exist yet" in result["msg"]
    assert h.swarm.applied == [] and h.ledger() == []


def test_a_node_that_is_not_a_manager_is_refused(h):
    h.swarm.manager = False
    with pytest.raises(DockerError, match="not a swarm manager"):
        h.deploy("1.0")


def test_no_deploy_behind_the_maintenance_page(h):
    (h.conf_dir / "maintenance").mkdir()
    (h.conf_dir / "maintenance" / "on").write_text("restore of 20261205T0900Z\n")
    with pytest.raises(ReleaseFailure, match="maintenance page is on"):
        h.deploy("1.0")
    assert h.swarm.applied == []


def test_status_names_the_release_and_where_its_tasks_run(h):
    h.deploy("1.0")
    status = h.run(state="status")
    assert status["service"]["release"] == h.live()
    assert status["service"]["nodes"] == ["swarm1", "swarm2", "swarm3"]
    assert [entry["outcome"] for entry in status["releases"]] == ["success"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"replicas": 0}, "replicas must be at least 1, got 0"),
        ({"secret_env": {"APP_KEY": "x"}}, "secret_env (APP_KEY) cannot be used with topology swarm"),
        ({"volumes": {"uploads": "/srv/uploads"}}, "volumes cannot be used with topology swarm"),
    ],
)
def test_swarm_refuses_what_it_cannot_honour(h, overrides, message):
    errors = h.module.swarm_errors(h.params(**overrides))
    assert any(message in error for error in errors), errors
    assert h.module.swarm_errors(h.params()) == []


def test_a_proxy_that_does_not_answer_fails_the_deploy_naming_it(h):
    h.probe.refused = True
    with pytest.raises(ReleaseFailure) as failure:
        h.deploy("1.0", verify_url="https://127.0.0.1:443/health", verify_timeout=2)
    assert "the proxy does not serve the release" in str(failure.value)
    assert "Connection refused" in str(failure.value)
    assert h.ledger()[-1]["outcome"] == "failed"
