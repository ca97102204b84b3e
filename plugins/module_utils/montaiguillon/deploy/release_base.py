"""The release manager's plumbing, shared by deploy, rollback and status."""

import getpass
import os
import socket
import time
from contextlib import contextmanager

from ansible.module_utils.montaiguillon.common.clock import iso, utcnow
from ansible.module_utils.montaiguillon.common.files import read_text
from ansible.module_utils.montaiguillon.common.lock import DeployLock, LockHeld, acquire_waiting
from ansible.module_utils.montaiguillon.deploy.confinement import Confinement
from ansible.module_utils.montaiguillon.deploy.fingerprint import config_digest
from ansible.module_utils.montaiguillon.deploy.ledger import ReleaseLedger
from ansible.module_utils.montaiguillon.deploy.plan import (
    COLOURS,
    container_name,
    read_state,
    upstream_file_name,
)
from ansible.module_utils.montaiguillon.deploy.probe import HttpProbe
from ansible.module_utils.montaiguillon.deploy.proxy import Proxy, ProxyError, slot_file_name
from ansible.module_utils.montaiguillon.deploy.secret_files import (
    SecretFileError,
    file_owner,
    file_variables,
    write_secret_files,
)
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure, Step, StepFailed
from ansible.module_utils.montaiguillon.deploy.volumes import volume_mounts


class ReleaseBase:
    """The release manager's plumbing: parameters, environment, state, steps, ledger and lock."""

    def __init__(self, params, engine, check_mode=False, probe=None, clock=None, sleep=None, now=None, warn=None):
        self.p = params
        self.engine = engine
        self.check_mode = check_mode
        self.probe = probe or HttpProbe()
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self.now = now or utcnow
        self.warn = warn or (lambda message: None)
        self.name = params["name"]
        self.state_dir = params.get("state_dir") or f"/var/lib/montaiguillon/{self.name}"
        self.lock_path = params.get("lock_file") or os.path.join(self.state_dir, DeployLock.FILE_NAME)
        self.upstream_path = os.path.join(params["proxy_conf_dir"], upstream_file_name(self.name))
        self.ledger = ReleaseLedger.in_dir(self.state_dir)
        self.proxy = Proxy(
            engine,
            params["proxy_container"],
            params["proxy_conf_dir"],
            self.upstream_path,
            self.clock,
            self.warn,
            slot_path=os.path.join(params["proxy_conf_dir"], slot_file_name(self.name)),
        )
        self.requested_by = params.get("requested_by") or f"{getpass.getuser()}@{socket.gethostname()}"
        self.confinement = Confinement.from_params(params)
        # The plain environment a container gets: this run's O(env), or during a cold rollback the
        # one the release ran with (its ledger entry); secrets always come from this run.
        self.plain_env = params.get("env") or {}
        self.steps = []

    # --- plumbing -------------------------------------------------------------

    @contextmanager
    def step(self, name):
        record = Step(name)
        started = self.clock()
        try:
            yield record
        except BaseException as exc:
            record.result = "failed"
            record.detail = record.detail or str(exc)
            raise
        finally:
            self.steps.append(
                {
                    "step": name,
                    "seconds": round(self.clock() - started, 3),
                    "result": record.result,
                    "detail": record.detail,
                }
            )

    def environment(self):
        """A serving container's environment: env, secret_env over it, and NAME_FILE for each secret file."""
        merged = {
            **self.plain_env,
            **(self.p.get("secret_env") or {}),
            **file_variables(self.p.get("secret_files")),
        }
        return {key: _env_value(value) for key, value in merged.items()}

    def migrate_environment(self):
        """The one-off migration's environment: the serving one, the secret files' values, migrate_secret_env."""
        merged = {
            **(self.p.get("env") or {}),
            **(self.p.get("secret_env") or {}),
            **(self.p.get("secret_files") or {}),
            **(self.p.get("migrate_secret_env") or {}),
        }
        return {key: _env_value(value) for key, value in merged.items()}

    def oneoff_options(self):
        """The migration's ``containers.create`` options: the slots' confinement and named volumes."""
        options = self.confinement.docker_kwargs()
        if self.p.get("volumes"):
            options["volumes"] = volume_mounts(self.name, self.p["volumes"])
        return options

    def secret_mounts(self, colour, image_id):
        """Write ``colour``'s secret files (owned by the image's user); the bind mounts for its container."""
        secret_files = self.p.get("secret_files") or {}
        if not secret_files:
            return {}
        image = self.engine.local_image(image_id) or {}
        try:
            owner = file_owner((image.get("Config") or {}).get("User"), self.p.get("files_owner"))
            return write_secret_files(os.path.join(self.state_dir, "secrets", colour), secret_files, owner)
        except SecretFileError as exc:
            raise StepFailed(f"{exc}; nothing was switched") from exc

    def config_for(self, image_id):
        """Digest of the configuration a container of ``image_id`` gets from this run's parameters."""
        env = self.environment()
        secrets = {key: env[key] for key in self.p.get("secret_env") or {}}
        secrets.update({f"file:{key}": value for key, value in (self.p.get("secret_files") or {}).items()})
        shape = {**self.confinement.docker_kwargs(), "volumes": volume_mounts(self.name, self.p.get("volumes"))}
        return config_digest(image_id, env, secrets, self.p["port"], self.p["networks"], shape)

    def cname(self, colour):
        return container_name(self.name, colour)

    def read_state(self):
        inspects = {colour: self.engine.inspect_container(self.cname(colour)) for colour in COLOURS}
        return read_state(self.name, read_text(self.upstream_path), inspects)

    def read_ledger(self):
        entries = self.ledger.read()
        for warning in self.ledger.warnings:
            self.warn(warning)
        return entries

    @staticmethod
    def describe_state(state):
        parts = []
        for colour in COLOURS:
            c = state.colours[colour]
            role = "live" if colour == state.live_colour else "idle"
            if c.exists:
                parts.append(f"{colour} ({role}): {c.status}, release {c.release or '?'}, image {c.image or '?'}")
            else:
                parts.append(f"{colour} ({role}): no container")
        if state.live_colour is None:
            parts.append("the proxy does not point at either colour yet")
        return "; ".join(parts)

    def serving_note(self, state):
        live = state.live
        if live is not None and live.exists and live.running:
            return f"{state.live_colour} still serves release {live.release or '?'}"
        return "no release was serving before this one"

    def refuse_during_maintenance(self):
        """No deploy behind the maintenance page: a restore may be rewriting the database under it."""
        reason = self.proxy.maintenance_reason()
        if reason is not None:
            raise ReleaseFailure(
                f"the maintenance page is on ({reason}): a restore or other work holds the site, and a deploy "
                "now could migrate a half-restored database. Deploy once it is done; if nothing is running, "
                "turn it off with playbooks/maintenance.yml -e maintenance=off",
                {"changed": False},
            )

    def check_proxy(self):
        """The proxy must run and its conf.d must be here; fail before touching anything otherwise."""
        try:
            self.proxy.check()
        except ProxyError as exc:
            raise StepFailed(str(exc)) from exc

    # --- results --------------------------------------------------------------------

    def entry(self, **fields):
        base = {
            "release": None,
            "image": None,
            "image_id": None,
            "config": None,
            "env": None,
            "version": None,
            "revision": self.p.get("revision"),
            "pipeline_run": self.p.get("pipeline_run"),
            "requested_by": self.requested_by,
            "started_at": None,
            "finished_at": iso(self.now()),
            "duration_seconds": None,
            "switch_seconds": None,
            "outcome": None,
            "colour": None,
            "previous_release": None,
            "snapshot": self.p.get("snapshot"),
            "message": "",
        }
        base.update(fields)
        return base

    def record(self, entry):
        with self.step("ledger") as step:
            try:
                self.ledger.append(entry)
                step.detail = f"{entry['outcome']} recorded in {self.ledger.path}"
            except OSError as exc:
                step.result = "warning"
                step.detail = f"cannot append to {self.ledger.path}: {exc}"
                self.warn(step.detail)

    def take_lock(self, what):
        lock = DeployLock(self.lock_path, who=self.requested_by, what=what, break_lock=self.p["break_lock"])
        with self.step("lock") as step:
            try:
                # A deploy whose controller died keeps running on the server: wait (a bound) for it to finish.
                warnings, waited = acquire_waiting(lock, self.p.get("lock_wait") or 0, self.clock, self.sleep)
            except LockHeld as exc:
                raise ReleaseFailure(str(exc), {"changed": False, "lock": exc.holder}) from exc
            except OSError as exc:
                raise ReleaseFailure(f"cannot take the lock {lock.path}: {exc}") from exc
            for warning in warnings:
                self.warn(warning)
            step.detail = f"taken by {self.requested_by}" + (f" ({'; '.join(warnings)})" if warnings else "")
            if waited:
                step.detail += " after waiting for the change that held it"
        return lock

    def locked(self, what, body):
        """Run ``body()`` holding the lock; whatever happens, the old containers it moved aside are removed
        (``Retirement``), then the lock is released."""
        lock = self.take_lock(what)
        try:
            return body()
        finally:
            self.remove_retired()
            with self.step("unlock") as step:
                lock.release()
                step.detail = f"released {lock.path}"

    def finish(self, result):
        result["steps"] = self.steps
        return result


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
