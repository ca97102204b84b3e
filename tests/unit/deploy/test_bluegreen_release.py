"""The bluegreen_release module's manager, driven against an in-memory Docker engine and proxy.

The fake engine keeps containers and images as inspect dicts; the fake HTTP probe
answers for app containers (by IP) and for the proxy by reading the upstream file
the module writes, exactly as nginx would route. Time is a fake clock: sleeping
advances it instantly.
"""

import copy
import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.common.files import read_text
from ansible.module_utils.montaiguillon.deploy.ledger import ReleaseLedger
from ansible.module_utils.montaiguillon.deploy.plan import (
    LABEL_APP,
    LABEL_IMAGE,
    LABEL_IMAGE_ID,
    LABEL_RELEASE,
    parse_upstream,
)
from ansible.module_utils.montaiguillon.deploy.probe import ProbeError
from ansible.module_utils.montaiguillon.deploy.proxy import TEST_AND_RELOAD_SCRIPT, TEST_REFUSED, Proxy

RELOAD = ("sh", "-c", TEST_AND_RELOAD_SCRIPT)  # how a switch asks nginx to test and reload

VERIFY_URL = "https://127.0.0.1:18443/version"
SLOT_BLUE = "# Managed by the bluegreen_release module: the slot the proxy names in X-Montaiguillon-Slot.\n" + (
    'map $host $montaiguillon_app_slot { default "blue"; }\n'
)


# --- fakes ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class FakeEngine:
    """Containers and images by name/id; records what the module did."""

    def __init__(self, conf_dir):
        self.containers = {}
        self.images = {}
        self.registry = {}
        self.events = []
        self.nginx_test = (0, "nginx: configuration file /etc/nginx/nginx.conf test is successful")
        self.oneoff = (0, "migrations applied")
        self.oneoff_calls = []
        self.create_options = {}
        self.images_user = None
        self.removed_images = []
        # True: nginx still sends the live slot's traffic to an address it resolved before the container
        # was re-created (504) until its next reload.
        self.stale_route = False
        self._ips = {}
        self._next_ip = 10
        self.containers["proxy"] = {
            "Name": "/proxy",
            "State": {"Running": True, "Status": "running"},
            "Config": {"Labels": {}},
            "Mounts": [{"Source": conf_dir, "Destination": "/etc/nginx/conf.d"}],
            "behaviour": {},
        }

    # images
    def add_image(self, ref, image_id, version, local=True, **behaviour):
        attrs = {"Id": image_id, "RepoTags": [ref], "Config": {"Labels": {}}, "behaviour": {"version": version}}
        attrs["behaviour"].update(behaviour)
        (self.images if local else self.registry)[ref] = attrs
        if local:
            self.images[image_id] = attrs
        return attrs

    def local_image(self, ref):
        image = copy.deepcopy(self.images.get(ref))
        if image is not None and self.images_user:
            image["Config"]["User"] = self.images_user
        return image

    def pull(self, ref):
        self.events.append(("pull", ref))
        if ref in self.registry:
            attrs = self.registry[ref]
            self.images[ref] = self.images[attrs["Id"]] = attrs
        if ref not in self.images:
            raise DockerError(f"pull of {ref} failed: manifest unknown")
        return copy.deepcopy(self.images[ref])

    def remove_image(self, image_id):
        keys = [k for k, v in self.images.items() if v["Id"] == image_id]
        if not keys:
            return False, "already gone"
        self.removed_images.append(image_id)
        for key in keys:
            del self.images[key]
        return True, "removed"

    # containers
    def inspect_container(self, name):
        return copy.deepcopy(self.containers.get(name))

    def container_ip(self, name, network):
        if name not in self.containers:
            raise DockerError(f"container {name} does not exist")
        if name not in self._ips:
            self._next_ip += 1
            self._ips[name] = f"10.0.0.{self._next_ip}"
        return self._ips[name]

    def by_ip(self, ip):
        for name, address in self._ips.items():
            if address == ip and name in self.containers:
                return name, self.containers[name]
        return None, None

    def exec(self, name, command):
        self.events.append(("exec", name, tuple(command)))
        if not self.containers.get(name, {}).get("State", {}).get("Running"):
            raise DockerError(f"container {name} is not running")
        if command == ["sh", "-c", TEST_AND_RELOAD_SCRIPT]:  # nginx -t, then (when it passes) the reload
            code, output = self.nginx_test
            if code == 0:
                self.stale_route = False  # a reload resolves the slots' names again
            return (0, "") if code == 0 else (TEST_REFUSED, output)
        return 0, ""

    def logs(self, name, tail=20):
        return "Traceback (most recent call last):\nRuntimeError: cannot connect to mysql\n"

    def remove_container(self, name, stop_timeout=10):
        self.events.append(("remove", name))
        self._ips.pop(name, None)
        return self.containers.pop(name, None) is not None

    def retire_container(self, name, new_name):
        """Renamed aside and told to stop: it stops answering at once (the new one takes the name)."""
        self.events.append(("retire", name, new_name))
        container = self.containers.pop(name, None)
        if container is None:
            return False
        self._ips.pop(name, None)
        container["Name"] = f"/{new_name}"
        container["State"] = {"Running": False, "Status": "exited", "ExitCode": 0}
        self.containers[new_name] = container
        return True

    def container_names(self, label):
        key, value = label.split("=", 1)
        return [name for name, c in self.containers.items() if c["Config"]["Labels"].get(key) == value]

    def start_container(
        self, name, image, environment, networks, labels, restart_policy="unless-stopped", options=None
    ):
        self.events.append(("start", name, image))
        self.create_options[name] = options
        image_attrs = self.images[image]
        behaviour = dict(image_attrs["behaviour"])
        exits = behaviour.get("exits")
        self.containers[name] = {
            "Name": f"/{name}",
            "Id": f"{len(self.events):064x}",
            "Image": image_attrs["Id"],
            "State": {"Running": not exits, "Status": "exited" if exits else "running", "ExitCode": 1 if exits else 0},
            "Config": {"Labels": dict(labels), "Env": [f"{k}={v}" for k, v in environment.items()]},
            "networks": list(networks),
            "behaviour": behaviour,
            "probes": 0,
        }
        if behaviour.get("restarts"):
            self.containers[name]["RestartCount"] = behaviour["restarts"]
            self.containers[name]["State"].update({"Restarting": True, "ExitCode": 1})
        return copy.deepcopy(self.containers[name])

    def run_oneoff(self, name, image, command, environment, networks, labels=None, timeout=600, options=None):
        self.oneoff_calls.append(
            {
                "name": name,
                "image": image,
                "command": command,
                "env": environment,
                "networks": networks,
                "options": options,
            }
        )
        return self.oneoff


class Answer:
    def __init__(self, status, headers=None, body=""):
        self.status = status
        self.headers = headers or {}
        self.body = body

    def describe(self):
        return f"HTTP {self.status}: {self.body}"


class FakeProbe:
    """Answers like the apps and like nginx routing through the upstream file."""

    def __init__(self, module, engine, upstream_path):
        self.module = module
        self.engine = engine
        self.upstream_path = upstream_path
        self.proxy_down = False

    def app_answer(self, name, container, path):
        behaviour = container["behaviour"]
        if not container["State"]["Running"]:
            raise ProbeError(f"GET {path}: ConnectionRefusedError")
        version = behaviour["version"]
        headers = {"x-app-version": behaviour.get("header", version)}
        if path == "/health":
            container["probes"] += 1
            script = behaviour.get("health", [200])
            status = script[min(container["probes"] - 1, len(script) - 1)]
            return Answer(status, headers, "ok" if status == 200 else "starting")
        if path == "/version" and not behaviour.get("no_version"):
            return Answer(200, headers, json.dumps({"version": version, "revision": "rev-" + version}))
        if path == "/":
            return Answer(200, {}, "home page")
        return Answer(404, headers, "not found")

    def get(self, url, timeout=2.0, host=None, verify_tls=True):
        if url == VERIFY_URL:
            if self.proxy_down:
                raise ProbeError(f"GET {url}: ConnectionRefusedError")
            with open(self.upstream_path, encoding="utf-8") as handle:
                colour = parse_upstream(handle.read(), "app")
            name = f"app-{colour}"
            container = self.engine.containers.get(name)
            if container is None or not container["State"]["Running"]:
                return Answer(502, {}, "Bad Gateway")
            if self.engine.stale_route:
                return Answer(504, {"x-montaiguillon-slot": colour}, "Gateway Time-out")
            answer = self.app_answer(name, container, "/" if container["behaviour"].get("no_version") else "/version")
            # nginx stamps every answer with the colour its slot file names (roles/proxy site.conf).
            slot = re.search(r'default "(\w+)"', read_text(self.upstream_path.replace("-upstream", "-slot")) or "")
            return Answer(
                answer.status, {**answer.headers, "x-montaiguillon-slot": slot and slot.group(1)}, answer.body
            )
        rest = url[len("http://") :]
        ip, _, path = rest.partition("/")
        name, container = self.engine.by_ip(ip.split(":")[0])
        if container is None:
            raise ProbeError(f"GET {url}: no route to host")
        return self.app_answer(name, container, "/" + path)


class Harness:
    def __init__(self, module, tmp_path):
        self.module = module
        self.conf_dir = tmp_path / "conf.d"
        self.conf_dir.mkdir()
        self.state_dir = tmp_path / "state"
        self.upstream = self.conf_dir / "app-upstream.conf"
        self.engine = FakeEngine(str(self.conf_dir))
        self.probe = FakeProbe(module, self.engine, str(self.upstream))
        self.clock = FakeClock()
        self.warnings = []
        self._now = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)

    def now(self):
        self._now += timedelta(minutes=1)
        return self._now

    def params(self, **overrides):
        params = {key: spec.get("default") for key, spec in self.module.argument_spec().items()}
        params.update(
            {
                "proxy_conf_dir": str(self.conf_dir),
                "state_dir": str(self.state_dir),
                "verify_url": VERIFY_URL,
                "version_path": "/version",
                "requested_by": "alice",
                "revision": "abc123",
                "pipeline_run": "run-42",
                "env": {"DATABASE_PASSWORD": "s3cret", "DEBUG": False},
            }
        )
        params.update(overrides)
        return params

    def manager(self, check_mode=False, **overrides):
        return self.module.BlueGreenRelease(
            self.params(**overrides),
            self.engine,
            check_mode=check_mode,
            probe=self.probe,
            clock=self.clock.monotonic,
            sleep=self.clock.sleep,
            now=self.now,
            warn=self.warnings.append,
        )

    def deploy(self, image, **overrides):
        return self.manager(image=image, **overrides).run()

    def live_colour(self):
        if not self.upstream.exists():
            return None
        return parse_upstream(self.upstream.read_text(), "app")

    def ledger(self):
        return ReleaseLedger.in_dir(str(self.state_dir)).read()

    def starts(self):
        return [event for event in self.engine.events if event[0] == "start"]


@pytest.fixture
def bg(load_module):
    return load_module("bluegreen_release")


@pytest.fixture
def h(bg, tmp_path):
    harness = Harness(bg, tmp_path)
    harness.engine.add_image("site:1", "sha256:1111111111aa", "1.0", local=False)
    harness.engine.add_image("site:2", "sha256:2222222222bb", "2.0", local=False)
    return harness


def step_names(result):
    return [step["step"] for step in result["steps"]]


# --- deploys -------------------------------------------------------------------------------


def test_first_deploy_goes_blue_and_tells_the_story(h):
    result = h.deploy("site:1")
    assert result["changed"] is True
    assert result["live_colour"] == "blue" and result["previous_colour"] is None
    assert h.live_colour() == "blue"
    assert step_names(result) == [
        "lock",
        "read state",
        "pull",
        "plan",
        "start blue",
        "health",
        "version",
        "switch",
        "verify",
        "watch",
        "keep warm",
        "prune",
        "ledger",
        "unlock",
    ]
    assert all(isinstance(step["seconds"], float) for step in result["steps"])
    release = result["release"]
    assert release["outcome"] == "success" and release["version"] == "1.0"
    assert release["release"].endswith("-11111111") and release["image"] == "site:1"
    assert (release["revision"], release["pipeline_run"], release["requested_by"]) == ("abc123", "run-42", "alice")
    assert h.ledger() == [release]
    labels = h.engine.containers["app-blue"]["Config"]["Labels"]
    assert labels[LABEL_RELEASE] == release["release"] and labels[LABEL_IMAGE] == "site:1"
    assert labels[LABEL_IMAGE_ID] == "sha256:1111111111aa"
    assert "DEBUG=false" in h.engine.containers["app-blue"]["Config"]["Env"]
    assert result["diff"]["before"]["live_colour"] is None
    assert result["diff"]["after"] == {
        "live_colour": "blue",
        "live_image": "site:1",
        "live_release": release["release"],
    }
    assert not (h.state_dir / "deploy.lock").exists()


def test_second_deploy_goes_green_and_keeps_blue_warm(h):
    first = h.deploy("site:1")
    result = h.deploy("site:2")
    assert (result["live_colour"], result["previous_colour"]) == ("green", "blue")
    assert h.live_colour() == "green"
    assert h.engine.containers["app-blue"]["State"]["Running"] is True
    assert result["release"]["previous_release"] == first["release"]["release"]
    assert result["switch_seconds"] is not None and result["switch_seconds"] >= 0
    reloads = [e for e in h.engine.events if e[:3] == ("exec", "proxy", RELOAD)]
    assert len(reloads) == 2
    assert "stays running for a rollback" in result["steps"][step_names(result).index("keep warm")]["detail"]


def test_same_image_again_changes_nothing(h):
    h.deploy("site:1")
    events_before = list(h.engine.events)
    ledger_before = h.ledger()
    result = h.deploy("site:1")
    assert result["changed"] is False
    assert "already runs" in result["msg"]
    assert h.ledger() == ledger_before  # no ledger entry for a no-op
    new_events = h.engine.events[len(events_before) :]
    assert [e[0] for e in new_events] == ["pull"]  # no start, no exec, no remove
    assert result["diff"]["before"] == result["diff"]["after"]


def test_same_image_again_replaces_a_live_release_that_stopped_answering(h):
    h.deploy("site:1")
    blue = h.engine.containers["app-blue"]
    blue["behaviour"] = {**blue["behaviour"], "health": [500]}  # running, routed, but broken
    result = h.deploy("site:1")
    assert result["changed"] is True and result["live_colour"] == "green"
    plan = result["steps"][step_names(result).index("plan")]["detail"]
    assert "fails its health check (HTTP 500" in plan
    assert h.live_colour() == "green"
    assert h.ledger()[-1]["outcome"] == "success"


def test_same_image_again_replaces_a_live_release_the_proxy_no_longer_reaches(h):
    h.deploy("site:1")
    h.engine.stale_route = True  # app-blue re-created by hand: healthy, but nginx has its old address
    assert h.manager(check_mode=True, image="site:1").run()["changed"] is True
    result = h.deploy("site:1")
    plan = result["steps"][step_names(result).index("plan")]["detail"]
    assert "fails its health check (the proxy does not serve it: HTTP 504" in plan
    assert (result["changed"], h.live_colour()) == (True, "green")
    assert h.deploy("site:1")["changed"] is False  # served again after the switch's reload


def test_check_mode_reports_a_broken_live_release_as_a_change(h):
    h.deploy("site:1")
    blue = h.engine.containers["app-blue"]
    blue["behaviour"] = {**blue["behaviour"], "health": [503]}
    result = h.manager(check_mode=True, image="site:1").run()
    assert result["changed"] is True and "fails its health check" in result["msg"]
    assert h.live_colour() == "blue"


@pytest.mark.parametrize("check_mode", [False, True])
def test_no_deploy_behind_the_maintenance_page(h, bg, check_mode):
    h.deploy("site:1")
    h.engine.add_image("site:2", "sha256:2222222222bb", "2.0")
    flag = h.upstream.parent / "maintenance" / "on"
    flag.parent.mkdir()
    flag.write_text("restore of 20261204T010000Z-manual\n")
    events, ledger = list(h.engine.events), h.ledger()
    with pytest.raises(bg.ReleaseFailure, match=r"maintenance page is on \(restore of 20261204T010000Z-manual\)"):
        h.manager(check_mode=check_mode, image="site:2").run()
    assert h.engine.events == events and h.ledger() == ledger and h.live_colour() == "blue"
    flag.unlink()
    assert h.deploy("site:2")["changed"] is True


def test_a_changed_variable_is_a_new_release_with_the_same_image(h):
    first = h.deploy("site:1")
    result = h.deploy("site:1", env={"DATABASE_PASSWORD": "s3cret", "DEBUG": True})
    assert result["changed"] is True and result["live_colour"] == "green"
    assert "configuration changed" in result["steps"][step_names(result).index("plan")]["detail"]
    assert "DEBUG=true" in h.engine.containers["app-green"]["Config"]["Env"]
    assert result["release"]["config"] != first["release"]["config"]
    assert h.deploy("site:1", env={"DATABASE_PASSWORD": "s3cret", "DEBUG": True})["changed"] is False


def test_a_rotated_secret_reaches_the_site_and_is_never_recorded(h):
    h.deploy("site:1", secret_env={"DB_PASSWORD": "old-password"})
    result = h.deploy("site:1", secret_env={"DB_PASSWORD": "new-password"})
    assert result["changed"] is True
    assert "DB_PASSWORD=new-password" in h.engine.containers["app-green"]["Config"]["Env"]
    ledger = json.dumps(h.ledger())
    assert "new-password" not in ledger and "old-password" not in ledger


def test_new_limits_are_a_new_release(h):
    h.deploy("site:1")
    assert h.deploy("site:1", confinement={"memory": "1g"})["changed"] is True
    assert h.engine.create_options["app-green"]["mem_limit"] == "1g"


def test_check_mode_sees_a_configuration_change(h):
    h.deploy("site:1")
    plan = h.manager(check_mode=True, image="site:1", env={"NEW": "1"}).run()
    assert plan["changed"] is True and "configuration changed" in plan["msg"]


def test_third_deploy_replaces_the_old_idle_colour(h):
    h.engine.add_image("site:3", "sha256:3333333333cc", "3.0", local=False)
    h.deploy("site:1")
    h.deploy("site:2")
    old_id = h.engine.containers["app-blue"]["Id"]
    h.engine.events.clear()
    result = h.deploy("site:3")
    assert result["live_colour"] == "blue"
    assert h.engine.containers["app-blue"]["Image"] == "sha256:3333333333cc"
    assert h.engine.containers["app-green"]["Image"] == "sha256:2222222222bb"
    # The old blue is moved aside (not waited for) before the new one takes its name, and removed only
    # once the new release is live: no stop on the way to the switch.
    aside = f"app-blue-retired-{old_id[:12]}"
    kinds = [e[:2] if e[0] != "exec" else ("exec",) for e in h.engine.events]
    assert kinds.index(("retire", "app-blue")) < kinds.index(("start", "app-blue")) < kinds.index(("exec",))
    assert h.engine.events[-1] == ("remove", aside)
    assert ("remove", "app-blue") not in h.engine.events
    assert step_names(result)[-2:] == ["retire", "unlock"]
    assert result["steps"][-2]["detail"] == f"removed {aside}"
    assert sorted(h.engine.containers) == ["app-blue", "app-green", "proxy"]


def test_a_container_moved_aside_by_a_run_that_died_is_removed_by_the_next(h):
    h.deploy("site:1")
    h.deploy("site:2")
    h.engine.retire_container("app-blue", "app-blue-retired-0123456789ab")  # the run died after this
    h.engine.containers["unrelated-retired-0123456789ab"] = {"Config": {"Labels": {LABEL_APP: "app"}}}
    result = h.deploy("site:2")  # nothing to deploy, but the lock's holder tidies up
    assert result["changed"] is False
    assert ("remove", "app-blue-retired-0123456789ab") in h.engine.events
    assert sorted(h.engine.containers) == ["app-green", "proxy", "unrelated-retired-0123456789ab"]


def test_a_failed_deploy_still_removes_the_old_container_it_moved_aside(h, bg):
    h.engine.add_image("site:3", "sha256:3333333333cc", "3.0", local=False, health=[503])
    h.deploy("site:1")
    h.deploy("site:2")
    with pytest.raises(bg.ReleaseFailure) as failure:
        h.deploy("site:3")
    assert step_names(failure.value.result)[-2:] == ["retire", "unlock"]
    assert sorted(h.engine.containers) == ["app-green", "proxy"]
    assert h.live_colour() == "green"


def test_retention_prunes_old_images_but_never_live_or_previous(h):
    for n in range(3, 6):
        h.engine.add_image(f"site:{n}", f"sha256:{n}{n}{n}{n}{n}{n}{n}{n}dd", f"{n}.0", local=False)
    for n in range(1, 6):
        result = h.deploy(f"site:{n}", keep_releases=1)
    # live is 5 (blue), previous is 4 (green): both kept; 1..3 pruned along the way
    assert set(h.engine.removed_images) == {"sha256:1111111111aa", "sha256:2222222222bb", "sha256:33333333dd"}
    assert "sha256:44444444dd" not in h.engine.removed_images
    assert "sha256:55555555dd" not in h.engine.removed_images
    assert result["pruned_images"] == ["sha256:33333333dd"]


def test_migrations_run_in_a_oneoff_of_the_new_image_with_the_new_env(h):
    h.deploy("site:1")
    h.deploy("site:2", migrate_command=["python3", "-m", "site", "migrate"])
    call = h.engine.oneoff_calls[-1]
    assert call["image"] == "sha256:2222222222bb"
    assert call["command"] == ["python3", "-m", "site", "migrate"]
    assert call["env"]["DATABASE_PASSWORD"] == "s3cret"
    assert call["networks"] == ["montaiguillon_frontend", "montaiguillon_backend"]


def test_slots_and_migration_are_confined_alike(h):
    confinement = {"capabilities": ["net_bind_service"], "read_only": True, "memory": "256m", "pids_limit": 64}
    result = h.deploy("site:1", migrate_command=["migrate"], confinement=confinement)
    slot = h.engine.create_options["app-blue"]
    assert slot == h.engine.oneoff_calls[-1]["options"]
    assert slot["cap_drop"] == ["ALL"] and slot["cap_add"] == ["NET_BIND_SERVICE"]
    assert slot["security_opt"] == ["no-new-privileges:true"]
    assert slot["read_only"] is True and list(slot["tmpfs"]) == ["/tmp"]
    assert (slot["mem_limit"], slot["memswap_limit"], slot["pids_limit"]) == ("256m", "256m", 64)
    started = next(step for step in result["steps"] if step["step"] == "start blue")
    assert "capabilities NET_BIND_SERVICE; memory 256m; pids 64; read-only root" in started["detail"]


def test_secret_files_keep_passwords_out_of_the_serving_environment(h):
    h.engine.images_user = "10001:10001"
    secrets = {"secret_files": {"APP_DB_PASSWORD": "db-pass"}, "migrate_secret_env": {"APP_MIGRATE_PASSWORD": "mig"}}
    h.deploy("site:1", migrate_command=["migrate"], secret_env={}, **secrets)
    serving_env = "\n".join(h.engine.containers["app-blue"]["Config"]["Env"])
    assert "db-pass" not in serving_env and "mig" not in serving_env
    assert "APP_DB_PASSWORD_FILE=/run/secrets/APP_DB_PASSWORD" in serving_env
    secret = h.state_dir / "secrets" / "blue" / "APP_DB_PASSWORD"
    assert secret.read_text() == "db-pass" and (secret.stat().st_uid, secret.stat().st_mode & 0o777) == (10001, 0o400)
    assert h.engine.create_options["app-blue"]["volumes"] == {
        str(secret): {"bind": "/run/secrets/APP_DB_PASSWORD", "mode": "ro"}
    }
    migrate_env = h.engine.oneoff_calls[-1]["env"]
    assert migrate_env["APP_MIGRATE_PASSWORD"] == "mig" and migrate_env["APP_DB_PASSWORD"] == "db-pass"
    rotated = h.deploy("site:1", secret_env={}, secret_files={"APP_DB_PASSWORD": "new-pass"})
    assert rotated["changed"] is True
    assert (h.state_dir / "secrets" / "green" / "APP_DB_PASSWORD").read_text() == "new-pass"
    assert secret.read_text() == "db-pass"  # the warm previous slot keeps its own file


def test_both_slots_and_the_migration_share_the_named_volumes(h):
    volumes = {"uploads": "/srv/uploads"}
    h.deploy("site:1", volumes=volumes, migrate_command=["migrate"])
    h.deploy("site:2", volumes=volumes)
    mount = {"app_uploads": {"bind": "/srv/uploads", "mode": "rw"}}
    assert h.engine.create_options["app-blue"]["volumes"] == mount
    assert h.engine.create_options["app-green"]["volumes"] == mount
    assert h.engine.oneoff_calls[0]["options"]["volumes"] == mount
    assert h.deploy("site:2", volumes={"uploads": "/srv/other"})["changed"] is True


def test_default_confinement_drops_every_capability(h):
    h.deploy("site:1")
    slot = h.engine.create_options["app-blue"]
    assert slot["cap_drop"] == ["ALL"] and "cap_add" not in slot
    assert "read_only" not in slot and slot["mem_limit"] == "512m" and slot["pids_limit"] == 256


# --- failures -------------------------------------------------------------------------------


def test_migration_failure_switches_nothing(h, bg):
    h.deploy("site:1")
    h.engine.oneoff = (1, "applying 0007_add_column\nERROR 1060: Duplicate column name 'slug'\n")
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:2", migrate_command=["migrate"])
    message = str(caught.value)
    assert "migrations failed (migrate exited with 1)" in message
    assert "Duplicate column name 'slug'" in message
    assert "blue still serves release" in message
    assert h.live_colour() == "blue"
    assert [e for e in h.starts() if e[1] == "app-green"] == []
    assert h.ledger()[-1]["outcome"] == "failed"
    assert caught.value.result["steps"][-1]["step"] == "unlock"
    assert not (h.state_dir / "deploy.lock").exists()


def test_health_timeout_fails_clearly_and_leaves_live_untouched(h, bg):
    h.deploy("site:1")
    h.engine.add_image("site:bad", "sha256:badbadbad0", "9.9", local=False, health=[503])
    upstream_before = h.upstream.read_text()
    blue_before = copy.deepcopy(h.engine.containers["app-blue"])
    del h.clock.sleeps[:]
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:bad", health_timeout=5, health_interval=1)
    message = str(caught.value)
    assert "app-green did not become healthy within 5 s" in message
    assert "last answer: HTTP 503" in message
    assert "cannot connect to mysql" in message  # the container's last log lines
    assert "blue still serves release" in message
    assert h.upstream.read_text() == upstream_before
    assert h.engine.containers["app-blue"] == blue_before
    assert "app-green" not in h.engine.containers  # failed idle container removed
    assert not [e for e in h.engine.events if e[0] == "exec" and e[2] == RELOAD][1:]
    assert h.clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1, 1, 1, 1]  # quick first probes, then every second to 5 s
    entry = h.ledger()[-1]
    assert entry["outcome"] == "failed" and "did not become healthy" in entry["message"]
    assert caught.value.result["live_colour"] == "blue"


def test_health_failure_with_keep_failed_keeps_the_container(h, bg):
    h.engine.add_image("site:bad", "sha256:badbadbad0", "9.9", local=False, health=[500])
    with pytest.raises(bg.ReleaseFailure, match="kept app-blue for inspection"):
        h.deploy("site:bad", health_timeout=2, keep_failed=True)
    assert "app-blue" in h.engine.containers


def test_container_that_exits_fails_without_waiting_for_the_timeout(h, bg):
    h.engine.add_image("site:crash", "sha256:crash00000", "9.9", local=False, exits=True)
    with pytest.raises(bg.ReleaseFailure, match=r"app-blue exited with code 1 before becoming healthy"):
        h.deploy("site:crash", health_timeout=60)
    assert h.clock.now - 1000.0 < 5


def test_container_in_a_restart_loop_fails_without_waiting_for_the_timeout(h, bg):
    h.engine.add_image("site:loop", "sha256:100p100p10", "9.9", local=False, restarts=3)
    with pytest.raises(bg.ReleaseFailure, match=r"keeps exiting \(code 1, restarted 3 times\)") as caught:
        h.deploy("site:loop")
    assert caught.value.result["steps"][-3]["seconds"] < 5


def test_slow_start_becomes_healthy(h):
    h.engine.add_image("site:slow", "sha256:slow000000", "1.5", local=False, health=[503, 503, 503, 200])
    result = h.deploy("site:slow")
    assert "healthy after 4 tries" in result["steps"][step_names(result).index("health")]["detail"]


def test_failure_in_the_watch_window_switches_back(h, bg):
    h.deploy("site:1")
    # healthy for the start-up probe, then fails two probes into the window
    h.engine.add_image("site:flaky", "sha256:f1a4f1a4f1", "3.0", local=False, health=[200, 200, 500])
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:flaky")
    message = str(caught.value)
    assert "failed its health check" in message
    assert "switched back to blue" in message
    assert h.live_colour() == "blue"
    assert "app-green" not in h.engine.containers
    entry = h.ledger()[-1]
    assert entry["outcome"] == "rolled_back"
    assert caught.value.result["live_colour"] == "blue"
    assert "switch back" in step_names(caught.value.result)


def test_one_lost_probe_in_the_watch_window_is_not_a_broken_release(h):
    """A saturated server may let one probe fail; the release stays (Docker's and Kubernetes' retries)."""
    h.deploy("site:1")
    h.engine.add_image("site:2", "sha256:2222bbbb22", "2.0", local=False, health=[200, 200, 500, 200])
    result = h.deploy("site:2")
    assert result["changed"] is True and h.live_colour() == "green"
    assert h.ledger()[-1]["outcome"] == "success"


def test_a_failure_streak_open_when_the_window_ends_is_followed_to_its_end(h, bg):
    h.deploy("site:1")
    # fails from the last probe of the 5 s window on: the window alone would end with it unresolved
    h.engine.add_image("site:3", "sha256:3333cccc33", "3.0", local=False, health=[200] * 5 + [500])
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:3")
    assert "failed its health check: HTTP 500" in str(caught.value)
    assert "3 probes in a row" in str(caught.value)
    assert h.live_colour() == "blue" and h.ledger()[-1]["outcome"] == "rolled_back"


def test_watch_failures_1_switches_back_on_the_first_failed_probe(h, bg):
    h.deploy("site:1")
    h.engine.add_image("site:2", "sha256:2222bbbb22", "2.0", local=False, health=[200, 200, 500, 200])
    with pytest.raises(bg.ReleaseFailure, match="failed its health check: HTTP 500"):
        h.deploy("site:2", watch_failures=1)
    assert h.live_colour() == "blue"


def test_proxy_verify_failure_switches_back(h, bg):
    h.deploy("site:1")
    h.deploy("site:2", verify_window=0)
    h.engine.add_image("site:3", "sha256:3333333333cc", "3.0", local=False)
    h.probe.proxy_down = True
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:3", verify_timeout=3)
    assert "the proxy did not serve app-blue within 3 s" in str(caught.value)
    assert "switched back to green" in str(caught.value)
    assert h.live_colour() == "green"
    assert h.ledger()[-1]["outcome"] == "rolled_back"


def test_first_deploy_that_fails_verification_has_nothing_to_switch_back_to(h, bg):
    h.probe.proxy_down = True
    with pytest.raises(bg.ReleaseFailure, match="no previous colour to switch back to, blue stays live"):
        h.deploy("site:1", verify_timeout=1)
    assert h.ledger()[-1]["outcome"] == "failed"


def test_nginx_refusing_the_upstream_restores_the_previous_file(h, bg):
    h.deploy("site:1")
    before = h.upstream.read_text()
    slot_before = (h.conf_dir / "app-slot.conf").read_text()
    h.engine.nginx_test = (1, 'nginx: [emerg] host not found in upstream "app-green:8000"')
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:2")
    assert "nginx -t in proxy refused the upstream app-green" in str(caught.value)
    assert "is proxy on network montaiguillon_frontend" in str(caught.value)
    assert h.upstream.read_text() == before
    assert (h.conf_dir / "app-slot.conf").read_text() == slot_before == SLOT_BLUE
    assert sorted(p.name for p in h.conf_dir.iterdir()) == ["app-slot.conf", "app-upstream.conf"]


def test_an_app_with_only_a_health_path_is_deployed_and_verified_by_the_proxy_stamp(h):
    h.engine.add_image("nginx:1", "sha256:4444444444dd", "1", local=False, no_version=True)
    h.engine.add_image("nginx:2", "sha256:5555555555ee", "2", local=False, no_version=True)
    h.deploy("nginx:1", version_path="")
    result = h.deploy("nginx:2", version_path="")
    assert result["changed"] is True and h.live_colour() == "green"
    assert "version" not in step_names(result)
    verify = result["steps"][step_names(result).index("verify")]["detail"]
    assert verify == f"{VERIFY_URL} is served by green (1 tries)"
    assert result["release"]["version"] is None
    assert (h.conf_dir / "app-slot.conf").read_text().endswith('{ default "green"; }\n')


def test_a_proxy_that_does_not_stamp_the_new_slot_is_switched_back(h, bg, monkeypatch):
    h.deploy("site:1")
    slot_file = h.conf_dir / "app-slot.conf"
    original_point_at = Proxy.point_at

    def point_without_stamp(proxy, *args, **kwargs):
        seconds = original_point_at(proxy, *args, **kwargs)
        slot_file.write_text(SLOT_BLUE)  # as if nginx kept naming the old slot
        return seconds

    monkeypatch.setattr(Proxy, "point_at", point_without_stamp)
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:2", verify_timeout=2)
    assert "from slot 'blue' (X-Montaiguillon-Slot), waiting for 'green'" in str(caught.value)
    assert h.live_colour() == "blue"


def test_version_header_mismatch_is_refused_before_switching(h, bg):
    h.engine.add_image("site:odd", "sha256:0dd0dd0dd0", "4.0", local=False, header="3.9")
    with pytest.raises(bg.ReleaseFailure, match=re.escape("sends X-App-Version '3.9' but /version says '4.0'")):
        h.deploy("site:odd")
    assert not h.upstream.exists()


def test_pull_failure_is_clear_and_changes_nothing(h, bg):
    h.deploy("site:1")
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("ghcr.io/x/site:missing")
    assert "the image is not on the server and failed, nothing was changed" in str(caught.value)
    assert "manifest unknown" in str(caught.value)
    assert h.live_colour() == "blue" and set(h.engine.containers) == {"proxy", "app-blue"}
    assert caught.value.result["changed"] is False


def test_pull_false_needs_a_local_image(h, bg):
    with pytest.raises(bg.ReleaseFailure, match="not on the server and pull is false"):
        h.deploy("site:1", pull=False)
    h.engine.add_image("site:local", "sha256:10ca110ca1", "1.1")
    result = h.deploy("site:local", pull=False)
    assert result["changed"] is True
    assert not [e for e in h.engine.events if e[0] == "pull"][1:]


def test_missing_proxy_fails_before_anything_starts(h, bg):
    del h.engine.containers["proxy"]
    with pytest.raises(bg.ReleaseFailure, match="proxy container proxy does not exist"):
        h.deploy("site:1")
    assert h.starts() == []


def test_lock_held_by_a_live_deploy_refuses(h, bg):
    h.state_dir.mkdir()
    (h.state_dir / "deploy.lock").write_text(
        json.dumps(
            {"who": "bob", "when": "2026-11-26T09:00:00Z", "what": "site:0", "pid": os.getpid(), "boot_id": None}
        )
    )
    with pytest.raises(bg.ReleaseFailure) as caught:
        h.deploy("site:1")
    assert "locked by bob since 2026-11-26T09:00:00Z (deploying site:0)" in str(caught.value)
    assert "break_lock=true" in str(caught.value)
    assert h.starts() == [] and h.ledger() == []
    assert (h.state_dir / "deploy.lock").exists()  # not ours to remove
    result = h.deploy("site:1", break_lock=True)
    assert result["changed"] is True
    assert any("break_lock" in w for w in h.warnings)


def test_lock_wait_waits_for_a_running_deploy_then_proceeds(h, bg):
    """A deploy whose controller was killed goes on on the server: a re-run waits for its lock."""
    h.state_dir.mkdir()
    lock = h.state_dir / "deploy.lock"
    lock.write_text(json.dumps({"who": "bob", "when": "2026-11-26T09:00:00Z", "what": "site:0", "pid": os.getpid()}))
    sleep = h.clock.sleep

    def sleep_then_finish(seconds):
        sleep(seconds)
        if h.clock.monotonic() >= 3:  # the other deploy finishes after about 3 s
            lock.unlink(missing_ok=True)

    h.clock.sleep = sleep_then_finish
    result = h.deploy("site:1", lock_wait=30)
    assert result["changed"] is True
    assert "after waiting" in result["steps"][0]["detail"]


def test_lock_wait_gives_up_with_the_holder_named(h, bg):
    h.state_dir.mkdir()
    (h.state_dir / "deploy.lock").write_text(
        json.dumps({"who": "bob", "when": "2026-11-26T09:00:00Z", "what": "site:0", "pid": os.getpid()})
    )
    with pytest.raises(bg.ReleaseFailure, match=r"locked by bob .* \(waited 5 s\)"):
        h.deploy("site:1", lock_wait=5)
    assert h.starts() == []


# --- check mode -----------------------------------------------------------------------------


def test_check_mode_does_nothing(h):
    h.deploy("site:1")
    h.engine.add_image("site:2", "sha256:2222222222bb", "2.0")  # already local
    events, ledger, upstream = list(h.engine.events), h.ledger(), h.upstream.read_text()
    result = h.manager(check_mode=True, image="site:2").run()
    assert result["changed"] is True
    assert result["diff"]["before"]["live_colour"] == "blue"
    assert result["diff"]["after"]["live_colour"] == "green"
    assert result["diff"]["after"]["live_image"] == "site:2"
    assert h.engine.events == events and h.ledger() == ledger and h.upstream.read_text() == upstream
    assert not (h.state_dir / "deploy.lock").exists()


def test_check_mode_with_an_image_not_local_reports_a_change_without_pulling(h):
    result = h.manager(check_mode=True, image="site:1").run()
    assert result["changed"] is True
    assert "not on the server; a real run would pull it" in result["msg"]
    assert h.engine.events == [] and not h.upstream.exists()


def test_check_mode_same_image_is_no_change(h):
    h.deploy("site:1")
    assert h.manager(check_mode=True, image="site:1").run()["changed"] is False


DIGEST_REF = "registry/site@sha256:" + "ab" * 32


def test_a_plan_of_no_change_is_settled_only_for_a_digest_or_without_pull(h):
    h.engine.add_image(DIGEST_REF, "sha256:3333333333cc", "3.0", local=False)
    h.deploy(DIGEST_REF)
    h.deploy("site:1")
    h.deploy(DIGEST_REF)
    assert h.manager(check_mode=True, image=DIGEST_REF).run()["settled"] is True
    # A tag can move on the registry: only a real run's pull can tell.
    h.deploy("site:1")
    tag_plan = h.manager(check_mode=True, image="site:1").run()
    assert tag_plan["changed"] is False and tag_plan["settled"] is False
    assert h.manager(check_mode=True, image="site:1", pull=False).run()["settled"] is True


def test_a_plan_is_not_settled_when_it_changes_or_another_run_holds_the_lock(h):
    h.engine.add_image(DIGEST_REF, "sha256:3333333333cc", "3.0", local=False)
    h.deploy(DIGEST_REF)
    h.engine.add_image("site:2", "sha256:2222222222bb", "2.0")
    changing = h.manager(check_mode=True, image="site:2").run()
    assert changing["changed"] is True and changing["settled"] is False
    (h.state_dir / "deploy.lock").write_text(
        json.dumps({"who": "bob", "when": "2026-11-26T09:00:00Z", "what": "site:0", "pid": os.getpid()})
    )
    held = h.manager(check_mode=True, image=DIGEST_REF).run()
    assert held["changed"] is False and held["settled"] is False
    assert any("the change lock is held" in note for note in held["notes"])


# --- rollback -------------------------------------------------------------------------------


def test_rollback_to_the_warm_previous_colour_only_switches(h):
    first = h.deploy("site:1")
    h.deploy("site:2")
    starts = len(h.starts())
    result = h.manager(state="rolled_back").run()
    assert result["changed"] is True
    assert h.live_colour() == "blue"
    assert len(h.starts()) == starts  # warm: nothing started
    entry = h.ledger()[-1]
    assert entry["outcome"] == "rollback" and entry["release"] == first["release"]["release"]
    assert "(warm)" in entry["message"]
    assert result["diff"]["after"]["live_release"] == first["release"]["release"]
    # the release we left stays warm: rolling back again returns to it
    again = h.manager(state="rolled_back").run()
    assert again["live_colour"] == "green" and h.live_colour() == "green"


def test_rollback_to_what_is_live_changes_nothing(h):
    h.deploy("site:1")
    second = h.deploy("site:2")
    result = h.manager(state="rolled_back", release=second["release"]["release"]).run()
    assert result["changed"] is False
    assert h.ledger()[-1]["outcome"] == "success"


def test_cold_rollback_starts_the_old_image_again(h):
    first = h.deploy("site:1")
    h.deploy("site:2")
    h.engine.remove_container("app-blue")
    result = h.manager(state="rolled_back", release=first["release"]["release"]).run()
    assert result["live_colour"] == "blue"
    assert h.engine.containers["app-blue"]["Image"] == "sha256:1111111111aa"
    assert "(cold)" in h.ledger()[-1]["message"]


def container_env(h, name):
    return dict(item.split("=", 1) for item in h.engine.containers[name]["Config"]["Env"])


def cold_rollback_to_the_first_of_two(h, password_today):
    """Release 1 (FEATURE=old), release 2 (FEATURE=new), release 1's container gone, then a rollback to it
    with today's settings (FEATURE=new, the password given). Returns release 1's deploy result."""
    first = h.deploy("site:1", env={"FEATURE": "old"}, secret_env={"APP_DB_PASSWORD": "pw-1"})
    h.deploy("site:2", env={"FEATURE": "new"}, secret_env={"APP_DB_PASSWORD": "pw-1"})
    h.engine.remove_container("app-blue")
    today = {"env": {"FEATURE": "new"}, "secret_env": {"APP_DB_PASSWORD": password_today}}
    h.manager(state="rolled_back", release=first["release"]["release"], **today).run()
    return first


def test_a_cold_rollback_is_the_release_with_its_own_environment(h):
    # A configuration change that broke the site is undone by a rollback, even once its container is gone.
    first = cold_rollback_to_the_first_of_two(h, password_today="pw-1")
    assert container_env(h, "app-blue")["FEATURE"] == "old"
    entry = h.ledger()[-1]
    assert entry["env"] == {"FEATURE": "old"}
    assert entry["config"] == first["release"]["config"]  # the very configuration it ran with
    assert h.warnings == []


def test_a_cold_rollback_keeps_today_s_secrets_and_says_so(h):
    first = cold_rollback_to_the_first_of_two(h, password_today="pw-2")
    env = container_env(h, "app-blue")
    assert env["FEATURE"] == "old" and env["APP_DB_PASSWORD"] == "pw-2"  # a rotated password is never undone
    assert h.ledger()[-1]["config"] != first["release"]["config"]
    assert any("secrets, port, networks, volumes or limits are this run's" in w for w in h.warnings)
    ledger_text = (h.state_dir / "releases.jsonl").read_text()
    assert "pw-1" not in ledger_text and "pw-2" not in ledger_text


def test_rollback_to_a_pruned_image_is_a_clear_error(h, bg):
    first = h.deploy("site:1")
    h.deploy("site:2")
    h.engine.remove_container("app-blue")
    h.engine.remove_image("sha256:1111111111aa")
    with pytest.raises(bg.ReleaseFailure, match=r"no longer on the server \(pruned\?\); deploy it again"):
        h.manager(state="rolled_back", release=first["release"]["release"]).run()
    assert h.live_colour() == "green"


def test_rollback_to_an_unknown_release_is_a_clear_error(h, bg):
    h.deploy("site:1")
    with pytest.raises(bg.ReleaseFailure, match="release nope is not in the ledger"):
        h.manager(state="rolled_back", release="nope").run()


def test_rollback_with_nothing_before(h, bg):
    h.deploy("site:1")
    with pytest.raises(bg.ReleaseFailure, match="nothing to roll back to"):
        h.manager(state="rolled_back").run()


def test_rollback_check_mode_does_nothing(h):
    h.deploy("site:1")
    h.deploy("site:2")
    events, ledger = list(h.engine.events), h.ledger()
    result = h.manager(state="rolled_back", check_mode=True).run()
    assert result["changed"] is True and "warm" in result["msg"]
    assert h.engine.events == events and h.ledger() == ledger and h.live_colour() == "green"


# --- status ---------------------------------------------------------------------------------


def test_status_reports_without_changing_anything(h):
    h.deploy("site:1")
    h.deploy("site:2")
    events, upstream = list(h.engine.events), h.upstream.read_text()
    result = h.manager(state="status", history=1).run()
    assert result["changed"] is False
    assert (result["live_colour"], result["idle_colour"]) == ("green", "blue")
    assert result["live"]["reported_version"] == "2.0" and result["live"]["healthy"] is True
    assert result["idle"]["reported_version"] == "1.0"
    assert result["lock"] is None
    assert len(result["releases"]) == 1 and result["releases"][0]["image"] == "site:2"
    assert [e for e in h.engine.events[len(events) :] if e[0] != "exec"] == []
    assert h.upstream.read_text() == upstream


def test_status_shows_the_lock_holder(h):
    h.state_dir.mkdir()
    (h.state_dir / "deploy.lock").write_text(json.dumps({"who": "bob", "pid": 1, "token": "t"}))
    result = h.manager(state="status").run()
    assert result["lock"] == {"who": "bob", "pid": 1}
    assert result["live_colour"] is None


# --- main(): argument checks and docker errors -------------------------------------------------


def run_main(bg, args, capsys):
    from ansible.module_utils.testing import patch_module_args

    with patch_module_args(args), pytest.raises(SystemExit):
        bg.main()
    return json.loads(capsys.readouterr().out)


def test_main_requires_image_for_present(bg, capsys):
    result = run_main(bg, {"state": "present"}, capsys)
    assert result["failed"] is True and "image" in result["msg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"image": "site:1", "port": 70000}, "port must be between 1 and 65535"),
        ({"image": "site:1", "keep_releases": 0}, "keep_releases must be at least 1"),
        ({"image": "site:1", "health_timeout": 0}, "health_timeout must be greater than 0"),
        ({"image": "site:1", "state": "gone"}, "value of state must be one of"),
        ({"image": "site:1", "confinement": {"memory": "lots"}}, "confinement.memory: 'lots' is not a size"),
        ({"image": "site:1", "version_path": "version"}, "version_path must be empty or start with '/'"),
        ({"image": "site:1", "volumes": {"data": "/etc"}}, "volumes.data: '/etc' is a system directory"),
        ({"image": "site:1", "confinement": {"capabilities": ["ALL"]}}, "ALL would undo the confinement"),
        ({"image": "site:1", "confinement": {"pids_limit": 2}}, "confinement.pids_limit: 2 is below 16"),
    ],
)
def test_main_validates_parameters(bg, capsys, args, message):
    result = run_main(bg, args, capsys)
    assert result["failed"] is True and message in result["msg"]


def test_main_turns_an_unreachable_docker_into_one_clear_message(bg, capsys, monkeypatch):
    def unreachable(docker_host=None):
        raise DockerError("cannot reach Docker at unix:///var/run/docker.sock: connection refused")

    monkeypatch.setattr(bg, "get_client", unreachable)
    result = run_main(bg, {"state": "status"}, capsys)
    assert result["failed"] is True
    assert result["msg"] == "cannot reach Docker at unix:///var/run/docker.sock: connection refused"


def test_main_hides_the_secret_env(bg, capsys, monkeypatch):
    monkeypatch.setattr(bg, "get_client", lambda docker_host=None: None)

    class Boom:
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            raise bg.ReleaseFailure("deploy failed with s3cret-password around", {"changed": False})

    monkeypatch.setattr(bg, "BlueGreenRelease", Boom)
    secret = {"DATABASE_PASSWORD": "s3cret-password"}
    params = {"image": "site:1", "env": {"DATABASE_USER": "site"}, "secret_env": secret}
    result = run_main(bg, params, capsys)
    assert "s3cret-password" not in json.dumps(result)
