"""A release on a swarm (site_topology: swarm): the same verbs, ledger and lock, Swarm rolls the service out.

The module runs on the swarm's first manager, where the proxy, the lock and the
ledger live. A deploy pulls the image there (it runs the migrations, and its
digest is what every node then pulls), writes the release's Docker secrets,
runs the migrations in a one-off container on the attachable overlay, and hands
the rollout to Swarm (``swarm_spec``): start-first, one task at a time, gated on
health, rolled back by Swarm itself on failure. The module waits for the
rollout's outcome, checks the site through the proxy and writes the ledger.
A rollback is a rollout of an earlier release from the ledger (its image by
digest and its plain environment), without migrations.
"""

from ansible.module_utils.montaiguillon.common.clock import iso
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.common.lock import read_holder
from ansible.module_utils.montaiguillon.deploy.fingerprint import config_digest
from ansible.module_utils.montaiguillon.deploy.ledger import with_snapshot_state
from ansible.module_utils.montaiguillon.deploy.plan import (
    LABEL_RELEASE,
    OUTCOME_FAILED,
    OUTCOME_ROLLBACK,
    ReleaseError,
    find_release,
    previous_release,
)
from ansible.module_utils.montaiguillon.deploy.release_base import ReleaseBase
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure, StepFailed
from ansible.module_utils.montaiguillon.deploy.swarm_rollout import SwarmRollout
from ansible.module_utils.montaiguillon.deploy.swarm_spec import (
    decide,
    running_nodes,
    spec_labels,
    update_state,
)


class SwarmRelease(SwarmRollout, ReleaseBase):
    """Deploy, roll back or read a release of the app's Swarm service."""

    def __init__(self, params, engine, swarm, **kwargs):
        super().__init__(params, engine, **kwargs)
        self.swarm = swarm
        self.secret_ids = set()

    def run(self):
        state = self.p["state"]
        if state == "status":
            return self.status()
        if state == "present":
            self.refuse_during_maintenance()
        self.swarm.check_manager()
        if self.check_mode:
            return self.plan()
        action = self.deploy if state == "present" else self.roll_back
        try:
            return self.finish(self.locked(self.p.get("image") or "rollback", action))
        except (StepFailed, ReleaseError) as exc:  # before anything changed
            raise ReleaseFailure(str(exc), {"changed": False, "steps": self.steps}) from exc
        except ReleaseFailure as failure:
            failure.result["steps"] = self.steps
            raise

    # --- reading ------------------------------------------------------------------------

    def service_state(self):
        attrs = self.swarm.service(self.name)
        return attrs, running_nodes(self.swarm.tasks(self.name)) if attrs else []

    def summary(self, attrs):
        labels = spec_labels(attrs)
        return {
            "live_colour": None,
            "live_image": labels.get("montaiguillon.image"),
            "live_release": labels.get(LABEL_RELEASE),
        }

    def status(self):
        attrs, running = self.service_state()
        names = self.swarm.nodes() if attrs else {}
        state, message = update_state(attrs)
        history = self.p["history"]
        holder = read_holder(self.lock_path)
        placed = sorted(names.get(node, node) for node in running)
        return {
            "changed": False,
            "topology": "swarm",
            # The one-server keys, as the app role's status shows them.
            "live": {"release": spec_labels(attrs).get(LABEL_RELEASE)} if attrs else None,
            "live_colour": f"service {self.name}: {len(running)} tasks on {', '.join(placed) or 'no node'}",
            "idle": None,
            "idle_colour": None,
            "service": {
                "name": self.name,
                "exists": attrs is not None,
                "release": spec_labels(attrs).get(LABEL_RELEASE),
                "image": spec_labels(attrs).get("montaiguillon.image"),
                "running": len(running),
                "nodes": placed,
                "update_state": state,
                "update_message": message,
            },
            "lock": {k: v for k, v in holder.items() if k != "token"} if holder is not None else None,
            "releases": with_snapshot_state(self.read_ledger()[-history:]) if history else [],
        }

    def spec_config(self, image_id, env):
        """Digest of everything that shapes the service: what tells a new release from no change."""
        secrets = {f"file:{key}": value for key, value in (self.p.get("secret_files") or {}).items()}
        shape = {
            **self.confinement.docker_kwargs(),
            "replicas": self.p["replicas"],
            "healthcheck": self.p.get("healthcheck_command"),
            "topology": "swarm",
        }
        return config_digest(image_id, env, secrets, self.p["port"], self.p["networks"], shape)

    def plan(self):
        attrs, running = self.service_state()
        before = self.summary(attrs)
        if self.p["state"] == "rolled_back":
            target = self.rollback_target(attrs)
            return {
                "changed": True,
                "msg": f"would roll back to release {target['release']}",
                "steps": [],
                "diff": {"before": before, "after": {**before, "live_release": target["release"]}},
            }
        image = self.engine.local_image(self.p["image"])
        if image is None:
            changed, reason = True, f"{self.p['image']} is not on the manager; a real run would pull it and deploy it"
        else:
            changed, reason = decide(
                attrs, image["Id"], self.spec_config(image["Id"], self.environment()), self.p["replicas"], running
            )
        after = {**before, "live_image": self.p["image"], "live_release": "(new release)"} if changed else before
        return {"changed": changed, "msg": reason, "steps": [], "diff": {"before": before, "after": after}}

    # --- rollback -----------------------------------------------------------------------

    def rollback_target(self, attrs):
        entries = self.read_ledger()
        live = spec_labels(attrs).get(LABEL_RELEASE)
        target = find_release(entries, self.p["release"]) if self.p.get("release") else previous_release(entries, live)
        if target is None:
            wanted = self.p.get("release") or f"the release before {live or 'the live one'}"
            raise ReleaseFailure(f"no release to roll back to: {wanted} is not in the ledger", {"changed": False})
        return target

    def roll_back(self):
        t0, started_at = self.clock(), self.now()
        attrs, running = self.service_state()
        target = self.rollback_target(attrs)
        if spec_labels(attrs).get(LABEL_RELEASE) == target["release"] and len(running) >= self.p["replicas"]:
            return {"changed": False, "msg": f"release {target['release']} is already live", "release": {}}
        self.plain_env = target.get("env") or self.plain_env
        image = self.engine.pull(target["image"]) if self.p["pull"] else self.engine.local_image(target["image"])
        if image is None:
            raise ReleaseFailure(f"the image of release {target['release']} ({target['image']}) is gone")
        env = self.environment()
        config = self.spec_config(image["Id"], env)
        fields = {
            "release": target["release"],
            "image": target["image"],
            "image_id": image["Id"],
            "config": config,
            "env": self.plain_env,
            "version": target.get("version"),
            "started_at": iso(started_at),
            "previous_release": spec_labels(attrs).get(LABEL_RELEASE),
            "colour": "swarm",
        }
        serving = self.serving_note_swarm(attrs, running)
        try:
            spec = self.spec(image, target["image"], target["release"], target.get("version"), config, env)
            self.rollout(spec, attrs, serving)
            self.verify()
        except (StepFailed, DockerError, ReleaseError, OSError) as exc:
            entry = self.entry(**fields, outcome=OUTCOME_FAILED, message=str(exc))
            self.record(entry)
            raise ReleaseFailure(str(exc), {"changed": True, "release": entry}) from exc
        entry = self.entry(
            **fields,
            outcome=OUTCOME_ROLLBACK,
            duration_seconds=round(self.clock() - t0, 3),
            message=f"rolled back to release {target['release']} ({target['image']})",
        )
        self.record(entry)
        return self.went_live(entry, attrs)

    # --- after the change ---------------------------------------------------------------

    def secrets_in_use(self, attrs):
        container = (((attrs or {}).get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
        return {secret.get("SecretID") for secret in container.get("Secrets") or []}

    def remove_retired(self):
        """Docker secrets of releases the service no longer uses (it refuses to remove those in use)."""
        with self.step("retire") as step:
            try:
                keep = self.secret_ids | self.secrets_in_use(self.swarm.service(self.name))
                removed = self.swarm.remove_unused_secrets(self.name, keep)
            except DockerError as exc:
                step.result, step.detail = "warning", str(exc)
                self.warn(step.detail)
                return
            step.detail = f"removed {len(removed)} unused secret(s)"
