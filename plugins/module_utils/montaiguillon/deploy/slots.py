"""One colour's life: HTTP probes, container lifecycle, the one-off migration, the switch."""

import json

from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.plan import (
    LABEL_APP,
    LABEL_RELEASE,
    container_labels,
    image_declared_version,
    short_id,
    tail_lines,
)
from ansible.module_utils.montaiguillon.deploy.probe import PROBE_TIMEOUT, ProbeError, poll_until_ok
from ansible.module_utils.montaiguillon.deploy.proxy import SLOT_HEADER, ProxyError
from ansible.module_utils.montaiguillon.deploy.story import StepFailed
from ansible.module_utils.montaiguillon.deploy.volumes import volume_mounts

STOP_TIMEOUT = 10
DRAIN_SECONDS = 2.0
# The new container's first health probes come quickly, then every health_interval (doubling).
FIRST_HEALTH_WAIT = 0.1
LOG_LINES = 20


class SlotOps:
    """What happens to one colour: probed, started, waited for, migrated, discarded, switched to, watched."""

    # --- HTTP --------------------------------------------------------------------

    def app_url(self, colour, path):
        address = self.engine.container_ip(self.cname(colour), self.p["networks"][0])
        return f"http://{address}:{self.p['port']}{path}"

    def probe_health(self, colour):
        """(ok, description) of one health probe of a colour's container."""
        try:
            answer = self.probe.get(self.app_url(colour, self.p["health_path"]), timeout=PROBE_TIMEOUT)
        except (ProbeError, DockerError) as exc:
            return False, str(exc)
        return 200 <= answer.status < 300, answer.describe()

    def probe_proxy(self, colour):
        """(ok, description): the proxy answers 2xx, stamped by nginx as served by ``colour``."""
        try:
            answer = self.probe.get(
                self.p["verify_url"],
                timeout=PROBE_TIMEOUT,
                host=self.p.get("verify_host"),
                verify_tls=self.p["verify_tls"],
            )
        except ProbeError as exc:
            return False, str(exc)
        served = answer.headers.get(SLOT_HEADER.lower())
        if not 200 <= answer.status < 300:
            return False, answer.describe()
        if served != colour:
            return False, f"HTTP {answer.status} from slot {served!r} ({SLOT_HEADER}), waiting for {colour!r}"
        return True, f"HTTP {answer.status}, {SLOT_HEADER} {served}"

    def probe_serving(self, colour):
        """(ok, description): the colour's container answers its health check, and the proxy serves it.

        A container healthy on its own address is not enough for "nothing to do": nginx resolved the
        container's name at its last reload, and a container re-created since (by hand, or after a
        crash) may have another address, which the proxy does not reach until the next switch.
        """
        ok, detail = self.probe_health(colour)
        if not ok:
            return False, detail
        ok, detail = self.probe_proxy(colour)
        return ok, (detail if ok else f"the proxy does not serve it: {detail}")

    def read_version(self, colour):
        """(version, revision) that a colour's container reports on /version."""
        try:
            answer = self.probe.get(self.app_url(colour, self.p["version_path"]), timeout=PROBE_TIMEOUT)
        except (ProbeError, DockerError) as exc:
            raise StepFailed(f"cannot read {self.p['version_path']} of {self.cname(colour)}: {exc}") from exc
        if answer.status != 200:
            raise StepFailed(f"{self.p['version_path']} of {self.cname(colour)} answered {answer.describe()}")
        try:
            data = json.loads(answer.body)
            version = str(data["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StepFailed(
                f"{self.p['version_path']} of {self.cname(colour)} is not JSON with a 'version' key: "
                f"{answer.describe()}"
            ) from exc
        header = answer.headers.get("x-app-version")
        if header != version:
            raise StepFailed(
                f"{self.cname(colour)} sends X-App-Version {header!r} but {self.p['version_path']} says {version!r}: "
                "a release that contradicts itself is not switched to"
            )
        revision = data.get("revision")
        return version, (str(revision) if revision is not None else None)

    def identify(self, colour, image, state, serving):
        """(version, revision) of the new release: from O(version_path) when set, else the image's label.

        The step "version" runs only with a version path; without one the release is named by its image.
        """
        declared = image_declared_version(image)
        if not self.p["version_path"]:
            return declared, None
        with self.step("version") as step:
            try:
                version, revision = self.read_version(colour)
            except StepFailed as exc:
                exc.args = (f"{exc}; {serving} ({self.discard(colour)})",)
                raise
            step.detail = f"{self.cname(colour)} reports version {version}" + (
                f", revision {revision}" if revision else ""
            )
        live = state.live
        if live is not None and live.exists and live.version and live.version == version:
            self.warn(f"the new release reports the same version as the live one ({version})")
        if declared and declared != version:
            self.warn(f"{self.p['image']} declares version {declared} but {self.p['version_path']} says {version}")
        return version, revision

    # --- container lifecycle ------------------------------------------------------

    def start_colour(self, colour, image_id, image_ref, release_id, revision, declared_version):
        """Start the new container of ``colour``; the old one there is moved aside, not waited for (retire.py)."""
        name = self.cname(colour)
        self.retire(colour)
        labels = container_labels(
            self.name, colour, release_id, image_ref, image_id, revision, declared_version, self.config_for(image_id)
        )
        env = self.environment()
        options = self.confinement.docker_kwargs()
        mounts = {**volume_mounts(self.name, self.p.get("volumes")), **self.secret_mounts(colour, image_id)}
        if mounts:
            options["volumes"] = mounts
        self.engine.start_container(name, image_id, env, self.p["networks"], labels, options=options)

    def start_and_wait(self, colour, image_id, image_ref, release_id, revision, image, serving_note):
        """The steps "start <colour>" and "health": a failed start is discarded, the live colour untouched."""
        with self.step(f"start {colour}") as step:
            self.start_colour(colour, image_id, image_ref, release_id, revision, image_declared_version(image))
            step.detail = (
                f"{self.cname(colour)} started from {image_ref} ({short_id(image_id)}); {self.confinement.describe()}"
            )
        with self.step("health") as step:
            try:
                attempts, last = self.wait_healthy(colour, serving_note)
            except StepFailed as exc:
                exc.args = (f"{exc} ({self.discard(colour)})",)
                raise
            step.detail = f"{self.cname(colour)} healthy after {attempts} tries ({last})"

    def wait_healthy(self, colour, serving_note):
        name = self.cname(colour)
        timeout = self.p["health_timeout"]

        def running_then_probe():
            attrs = self.engine.inspect_container(name)
            state = (attrs or {}).get("State") or {}
            restarts = (attrs or {}).get("RestartCount") or 0
            if attrs is None or not state.get("Running") or state.get("Restarting") or restarts:
                status = "disappeared" if attrs is None else f"exited with code {state.get('ExitCode')}"
                if attrs is not None and (state.get("Restarting") or restarts):
                    status = f"keeps exiting (code {state.get('ExitCode')}, restarted {restarts} times)"
                raise StepFailed(
                    f"{name} {status} before becoming healthy; {serving_note}. "
                    f"Last log lines:\n{tail_lines(self.engine.logs(name, LOG_LINES), LOG_LINES)}"
                )
            return self.probe_health(colour)

        ok, attempts, last = poll_until_ok(
            running_then_probe, timeout, self.p["health_interval"], self.clock, self.sleep, first=FIRST_HEALTH_WAIT
        )
        if not ok:
            raise StepFailed(
                f"{name} did not become healthy within {timeout:g} s (GET {self.p['health_path']} "
                f"every {self.p['health_interval']:g} s, {attempts} tries; last answer: {last}); "
                f"{serving_note}. Last log lines:\n{tail_lines(self.engine.logs(name, LOG_LINES), LOG_LINES)}"
            )
        return attempts, last

    def discard(self, colour, drain=False):
        """Remove a failed new container unless keep_failed."""
        if self.p["keep_failed"]:
            return f"kept {self.cname(colour)} for inspection (keep_failed)"
        if drain:
            self.sleep(DRAIN_SECONDS)
        self.engine.remove_container(self.cname(colour), stop_timeout=STOP_TIMEOUT)
        return f"removed {self.cname(colour)}"

    # --- the proxy ------------------------------------------------------------------

    def switch_to(self, colour, comment):
        """Point the upstream at a colour: write, nginx -t, reload. Returns the seconds it took."""
        target = self.cname(colour)
        hint = f" (is {self.p['proxy_container']} on network {self.p['networks'][0]} with {target}?)"
        try:
            return self.proxy.point_at(self.p["proxy_upstream"], target, self.p["port"], comment, hint, slot=colour)
        except ProxyError as exc:
            raise StepFailed(str(exc)) from exc

    def verify_proxy(self, colour):
        timeout = self.p["verify_timeout"]
        ok, attempts, last = poll_until_ok(
            lambda: self.probe_proxy(colour), timeout, min(0.2, self.p["health_interval"]), self.clock, self.sleep
        )
        if not ok:
            raise StepFailed(
                f"the proxy did not serve {self.cname(colour)} within {timeout:g} s "
                f"(GET {self.p['verify_url']}, {attempts} tries; last answer: {last})"
            )
        return attempts, last

    def watch(self, colour):
        """Probe the new container and the proxy for verify_window seconds; StepFailed on a failure streak.

        A probe round fails when the container's health or the proxy's answer fails. ``watch_failures``
        consecutive failed rounds fail the watch (a saturated server may let one probe time out, as
        Docker's and Kubernetes' health checks allow); a streak still open when the window ends is
        followed to its end, so a release that keeps failing never passes by running out the clock.
        """
        window, threshold = self.p["verify_window"], self.p.get("watch_failures", 1)
        started = self.clock()
        deadline = started + window
        rounds = streak = 0
        while self.clock() < deadline or streak > 0:
            problem = self._watch_round(colour)
            rounds += 1
            streak = streak + 1 if problem else 0
            if streak >= threshold:
                in_a_row = f"{streak} probes in a row, " if streak > 1 else ""
                raise StepFailed(f"{problem} ({in_a_row}{self.clock() - started:.0f} s after the switch)")
            self.sleep(self.p["health_interval"])
        return rounds

    def _watch_round(self, colour):
        """None when both probes pass, else what failed."""
        ok, last = self.probe_health(colour)
        if not ok:
            return f"{self.cname(colour)} failed its health check: {last}"
        ok, last = self.probe_proxy(colour)
        if not ok:
            return f"the proxy check failed: {last}"
        return None

    def migrate(self, image_id, release_id, serving):
        command = self.p["migrate_command"]
        with self.step("migrate") as step:
            env = self.migrate_environment()
            code, output = self.engine.run_oneoff(
                f"{self.name}-migrate",
                image_id,
                command,
                env,
                self.p["networks"],
                labels={LABEL_APP: self.name, LABEL_RELEASE: release_id, "montaiguillon.oneoff": "migrate"},
                timeout=self.p["migrate_timeout"],
                options=self.oneoff_options(),
            )
            if code != 0:
                raise StepFailed(
                    f"migrations failed ({' '.join(command)} exited with {code}); nothing was switched, "
                    f"{serving}. Last output lines:\n{tail_lines(output, LOG_LINES)}"
                )
            step.detail = f"{' '.join(command)} exited 0" + (
                f": {tail_lines(output, 1)}" if tail_lines(output, 1) else ""
            )
