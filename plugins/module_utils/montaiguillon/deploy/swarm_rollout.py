"""A deploy on a swarm, as its steps: pull on the manager, Docker secrets, migrations, Swarm's rollout, the check
through the proxy (the mixin of ``SwarmRelease``)."""

from ansible.module_utils.montaiguillon.common.clock import iso
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.confinement import memory_bytes
from ansible.module_utils.montaiguillon.deploy.plan import (
    LABEL_APP,
    LABEL_RELEASE,
    OUTCOME_FAILED,
    OUTCOME_ROLLED_BACK,
    OUTCOME_SUCCESS,
    ReleaseError,
    image_declared_version,
    make_release_id,
    short_id,
    tail_lines,
)
from ansible.module_utils.montaiguillon.deploy.probe import ProbeError, poll_until_ok
from ansible.module_utils.montaiguillon.deploy.secret_files import SecretFileError, file_owner, file_variables
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure, StepFailed
from ansible.module_utils.montaiguillon.deploy.swarm_spec import (
    ROLLBACK_COMPLETED,
    SECOND,
    UPDATE_COMPLETED,
    UPDATE_OVER,
    decide,
    digest_reference,
    healthcheck,
    secret_name,
    service_labels,
    spec_labels,
    update_policy,
    update_started,
    update_state,
)

POLL = 0.5


class SwarmRollout:
    """state=present on a swarm, and the rollout a rollback shares."""

    # --- deploy -------------------------------------------------------------------------

    def deploy(self):
        started_at, t0 = self.now(), self.clock()
        attrs, running = self.service_state()
        image, ref = self.pull()
        env = self.environment()
        config = self.spec_config(image["Id"], env)
        with self.step("plan") as step:
            changed, step.detail = decide(attrs, image["Id"], config, self.p["replicas"], running)
        if not changed:
            self.secret_ids = self.secrets_in_use(attrs)
            return {
                "changed": False,
                "msg": step.detail,
                "release": {},
                "diff": {"before": self.summary(attrs), "after": self.summary(attrs)},
            }
        release = make_release_id(started_at, image["Id"])
        version = image_declared_version(image)
        fields = {
            "release": release,
            "image": ref,
            "image_id": image["Id"],
            "config": config,
            "env": self.plain_env,
            "version": version,
            "started_at": iso(started_at),
            "previous_release": spec_labels(attrs).get(LABEL_RELEASE),
            "colour": "swarm",
        }
        serving = self.serving_note_swarm(attrs, running)
        try:
            spec = self.spec(image, ref, release, version, config, env)
            if self.p.get("migrate_command"):
                self.migrate(image["Id"], release, serving)
            self.rollout(spec, attrs, serving)
            self.verify()
        except (StepFailed, DockerError, ReleaseError, OSError) as exc:
            outcome = getattr(exc, "outcome", OUTCOME_FAILED)
            message = str(exc) + self.discard_new_service(attrs)
            entry = self.entry(**fields, outcome=outcome, message=message, duration_seconds=round(self.clock() - t0, 3))
            self.record(entry)
            raise ReleaseFailure(message, {"changed": True, "release": entry}) from exc
        entry = self.entry(
            **fields,
            outcome=OUTCOME_SUCCESS,
            duration_seconds=round(self.clock() - t0, 3),
            message=f"release {release} ({ref}) runs on {self.p['replicas']} tasks",
        )
        self.record(entry)
        return self.went_live(entry, attrs)

    def went_live(self, entry, attrs):
        after = {"live_colour": None, "live_image": entry["image"], "live_release": entry["release"]}
        return {
            "changed": True,
            "msg": entry["message"],
            "release": entry,
            "diff": {"before": self.summary(attrs), "after": after},
        }

    def discard_new_service(self, before):
        """A first release that failed leaves no service retrying it forever (unless keep_failed)."""
        if before is not None or self.p["keep_failed"]:
            return ""
        try:
            self.swarm.remove_service(self.name)
        except DockerError as exc:
            return f" (and the failed service could not be removed: {exc})"
        return f" (the new service {self.name} was removed)"

    @staticmethod
    def serving_note_swarm(attrs, running):
        if attrs is None:
            return "no release was serving before this one"
        return f"release {spec_labels(attrs).get(LABEL_RELEASE) or '?'} still serves on {len(running)} tasks"

    def pull(self):
        ref = self.p["image"]
        with self.step("pull") as step:
            try:
                image = self.engine.pull(ref) if self.p["pull"] else self.engine.local_image(ref)
            except DockerError as exc:
                raise StepFailed(f"the pull failed, nothing was changed: {exc}") from exc
            if image is None:
                raise StepFailed(f"image {ref} is not on the manager and pull is false; nothing was changed")
            digest_ref = digest_reference(ref, image.get("RepoDigests"))
            if digest_ref is None:
                raise StepFailed(
                    f"{ref} has no registry digest on the manager (built or loaded locally?): in site_topology "
                    "swarm every node pulls the image, so it must come from a registry; nothing was changed"
                )
            step.detail = f"{ref} is {digest_ref} ({short_id(image['Id'])})"
        return image, digest_ref

    def spec(self, image, ref, release, version, config, env):
        command = self.p.get("healthcheck_command")
        check = healthcheck(image, command, self.p["health_interval"], self.p["health_timeout"])
        with self.step("secrets") as step:
            refs = self.secret_refs(image, release)
            step.detail = f"{len(refs)} Docker secret(s) for release {release}"
        return {
            "image": ref,
            "env": env,
            "labels": service_labels(self.name, release, ref, image["Id"], self.p.get("revision"), version, config),
            "replicas": self.p["replicas"],
            "networks": self.p["networks"],
            "policy": update_policy(self.p["verify_window"]),
            "healthcheck": check,
            "secrets": refs,
            "confinement": self.confinement.docker_kwargs(),
            "memory": memory_bytes(self.confinement.memory) if self.confinement.memory else None,
            "stop_grace_period": 10 * SECOND,
        }

    def environment(self):
        merged = {**self.plain_env, **file_variables(self.p.get("secret_files"))}
        return {key: "" if value is None else str(value) for key, value in merged.items()}

    def secret_refs(self, image, release):
        secret_files = self.p.get("secret_files") or {}
        if not secret_files:
            return []
        try:
            uid, gid = file_owner(((image.get("Config") or {}).get("User")), self.p.get("files_owner"))
        except SecretFileError as exc:
            raise StepFailed(f"{exc}; nothing was changed") from exc
        refs = []
        for key, value in sorted(secret_files.items()):
            name = secret_name(self.name, release, key)
            secret_id = self.swarm.ensure_secret(name, value, self.name, release)
            self.secret_ids.add(secret_id)
            refs.append({"id": secret_id, "name": name, "file": key, "uid": str(uid), "gid": str(gid)})
        return refs

    def migrate(self, image_id, release, serving):
        command = self.p["migrate_command"]
        with self.step("migrate") as step:
            code, output = self.engine.run_oneoff(
                f"{self.name}-migrate",
                image_id,
                command,
                self.migrate_environment(),
                self.p["networks"],
                labels={LABEL_APP: self.name, LABEL_RELEASE: release, "montaiguillon.oneoff": "migrate"},
                timeout=self.p["migrate_timeout"],
                options=self.oneoff_options(),
            )
            if code != 0:
                raise StepFailed(
                    f"migrations failed ({' '.join(command)} exited with {code}); nothing was rolled "
                    f"out, {serving}. Last output lines:\n{tail_lines(output, 20)}"
                )
            step.detail = f"{' '.join(command)} exited 0"

    def rollout(self, spec, before, serving):
        """Hand the spec to Swarm and wait for the rollout's outcome; StepFailed unless it completed."""
        with self.step("rollout") as step:
            started_before = update_started(before)
            self.swarm.apply(self.name, spec)
            replicas = spec["replicas"]
            timeout = replicas * (self.p["health_timeout"] + 10) + self.p["verify_window"] + 30
            ok, _attempts, last = poll_until_ok(
                lambda: self.rollout_over(before is None, started_before, replicas),
                timeout,
                POLL,
                self.clock,
                self.sleep,
            )
            if not ok:
                raise StepFailed(f"the rollout did not finish within {timeout:g} s ({last}); {serving}")
            state, message, running = last
            if state == ROLLBACK_COMPLETED:
                raise StepFailed(f"Swarm rolled the service back: {message}; {serving}", outcome=OUTCOME_ROLLED_BACK)
            if state not in (UPDATE_COMPLETED, None):
                raise StepFailed(f"the rollout stopped ({state}: {message}); {serving}")
            step.detail = f"{len(running)} of {replicas} tasks run the release ({state or 'created'})"

    def rollout_over(self, created, started_before, replicas):
        attrs, running = self.service_state()
        state, message = update_state(attrs)
        if created:
            return len(running) >= replicas, (None, "", running)
        if update_started(attrs) == started_before or state not in UPDATE_OVER:
            return False, (state, message or "rollout in progress", running)
        return True, (state, message, running)

    def verify(self):
        with self.step("verify") as step:
            url, host = self.p["verify_url"], self.p.get("verify_host")
            if not url:
                step.detail = "verify_url is empty: the site was not checked through the proxy"
                return

            def check():
                try:
                    answer = self.probe.get(url, host=host, verify_tls=self.p["verify_tls"])
                except ProbeError as exc:
                    return False, str(exc)
                return 200 <= answer.status < 300, answer.describe()

            ok, attempts, last = poll_until_ok(check, self.p["verify_timeout"], POLL, self.clock, self.sleep)
            if not ok:
                raise StepFailed(f"the proxy does not serve the release (GET {url}, {attempts} tries; {last})")
            step.detail = f"GET {url} through the proxy: {last}"
