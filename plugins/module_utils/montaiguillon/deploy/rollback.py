"""A rollback (state=rolled_back): the warm slot switched back, or the release started again."""

from ansible.module_utils.montaiguillon.common.clock import iso
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.fingerprint import LABEL_CONFIG
from ansible.module_utils.montaiguillon.deploy.plan import (
    OUTCOME_FAILED,
    OUTCOME_ROLLBACK,
    ReleaseError,
    choose_target_colour,
    find_release,
    previous_release,
    short_id,
)
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure, StepFailed, went_live


class RollbackRelease:
    """state=rolled_back: bring back an earlier release, warm or cold."""

    # --- state: rolled_back -----------------------------------------------------------

    def choose_rollback_target(self, state, entries):
        live = state.live
        live_release = live.release if live is not None and live.exists else None
        wanted = self.p.get("release")
        if wanted:
            target = find_release(entries, wanted)
            if target is None:
                idle = state.idle
                if idle is not None and idle.exists and idle.release == wanted:
                    return self._entry_from_container(idle)
                known = ", ".join(e["release"] for e in entries[-5:] if e.get("release")) or "none"
                raise StepFailed(f"release {wanted} is not in the ledger {self.ledger.path} (latest: {known})")
            return target
        target = previous_release(entries, live_release)
        if target is None:
            idle = state.idle
            if idle is not None and idle.exists and idle.release and idle.release != live_release:
                return self._entry_from_container(idle)
            raise StepFailed(
                f"nothing to roll back to: the ledger has no release before {live_release or 'the live one'}"
            )
        return target

    @staticmethod
    def _entry_from_container(colour_state):
        return {
            "release": colour_state.release,
            "image": colour_state.image,
            "image_id": colour_state.image_id,
            "config": (colour_state.labels or {}).get(LABEL_CONFIG),
            "version": colour_state.version,
            "revision": colour_state.revision,
        }

    def rolled_back(self):
        state = self.read_state()
        try:
            target = self.choose_rollback_target(state, self.read_ledger())
        except StepFailed as exc:
            raise ReleaseFailure(str(exc), {"changed": False, "live_colour": state.live_colour}) from exc
        before = state.live_summary()
        live = state.live
        if (
            live is not None
            and live.exists
            and live.running
            and live.release == target["release"]
            and live.image_id == target.get("image_id")
        ):
            return self.finish(
                {
                    "changed": False,
                    "msg": f"release {target['release']} is already live on {state.live_colour}",
                    "release": {},
                    "live_colour": state.live_colour,
                    "previous_colour": state.idle_colour,
                    "switch_seconds": None,
                    "diff": {"before": before, "after": before},
                }
            )
        colour = choose_target_colour(state)
        after = {"live_colour": colour, "live_image": target.get("image"), "live_release": target["release"]}
        if self.check_mode:
            idle = state.idle
            warm = idle is not None and idle.running and idle.release == target["release"]
            return {
                "changed": True,
                "msg": f"would roll back to release {target['release']} on {colour} ("
                + ("warm: proxy switch only" if warm else "cold: start the container again")
                + ")",
                "release": {},
                "live_colour": state.live_colour,
                "previous_colour": state.live_colour,
                "steps": [],
                "diff": {"before": before, "after": after},
            }
        try:
            return self.finish(self.locked(f"rollback to {target['release']}", lambda: self.rollback(state, target)))
        except ReleaseFailure as failure:
            failure.result["steps"] = self.steps
            raise

    def rollback(self, state_before_lock, target):
        """The story: read state, plan (warm or cold), start if cold, version, switch, verify, ledger."""
        started_at, t0 = self.now(), self.clock()
        switched, colour, state = False, None, state_before_lock
        try:
            state = self.read_state_step()
            before = state.live_summary()
            colour = choose_target_colour(state)
            serving = self.serving_note(state)
            warm = self.plan_rollback_step(state, colour, target)
            if not warm:
                self.start_again(colour, target, serving)
            config = target.get("config") if warm else self.config_for(target.get("image_id"))
            version = self.rollback_version(colour, target)
            with self.step("switch") as step:
                seconds = self.switch_to(colour, f"live: {colour}, release {target['release']} (rollback)")
                switched = True
                step.detail = f"proxy now sends {self.p['proxy_upstream']} to {self.cname(colour)} ({seconds:.3f} s)"
            with self.step("verify") as step:
                attempts, _last = self.verify_proxy(colour)
                step.detail = f"{self.p['verify_url']} is served by {colour} ({attempts} tries)"
            entry = self.entry(
                release=target["release"],
                image=target.get("image"),
                image_id=target.get("image_id"),
                config=config,
                env=target.get("env"),
                version=version,
                revision=target.get("revision"),
                snapshot=target.get("snapshot"),
                started_at=iso(started_at),
                duration_seconds=round(self.clock() - t0, 3),
                switch_seconds=round(seconds, 3),
                outcome=OUTCOME_ROLLBACK,
                colour=colour,
                previous_release=before["live_release"],
                message=(
                    f"rolled back from {before['live_release'] or 'nothing'} to {target['release']} on {colour} "
                    f"({'warm' if warm else 'cold'})"
                ),
            )
        except (StepFailed, DockerError, ReleaseError, OSError) as exc:
            raise self.rollback_failed(exc, target, state, colour, switched, started_at, t0) from exc
        self.record(entry)
        return went_live(entry, before, colour, target.get("image"), before["live_colour"], entry["switch_seconds"])

    def plan_rollback_step(self, state, colour, target):
        """True when the idle colour still runs the target release and answers: only the proxy switches."""
        idle = state.colours[colour]
        with self.step("plan") as step:
            if not (idle.exists and idle.running and idle.release == target["release"]):
                step.detail = f"{self.cname(colour)} does not run release {target['release']}: starting it again"
                return False
            ok, last = self.probe_health(colour)
            step.detail = f"{self.cname(colour)} still runs release {target['release']}" + (
                ": warm, only the proxy switches" if ok else f" but is unhealthy ({last}): starting it again"
            )
            return ok

    def start_again(self, colour, target, serving):
        """A cold rollback: the release's image, still on the server, started on ``colour`` with the plain
        environment the release ran with (its ledger entry; entries older than that record: this run's).
        Secrets are this run's: a rotated password is never brought back."""
        image_id = target.get("image_id")
        image = self.engine.local_image(image_id) if image_id else None
        if image is None:
            raise StepFailed(
                f"the image of release {target['release']} ({target.get('image')}, {short_id(image_id)}) "
                "is no longer on the server (pruned?); deploy it again with state=present "
                f"image={target.get('image')}; {serving}"
            )
        if target.get("env") is not None:
            self.plain_env = target["env"]
        self.start_and_wait(
            colour, image_id, target.get("image"), target["release"], target.get("revision"), image, serving
        )
        if target.get("config") and self.config_for(image_id) != target["config"]:
            self.warn(
                f"release {target['release']} was started again with its own image and environment, but its "
                "secrets, port, networks, volumes or limits are this run's: they changed since it ran"
            )

    def rollback_version(self, colour, target):
        """The version the colour reports (with a version path), else the one the ledger recorded."""
        if not self.p["version_path"]:
            return target.get("version")
        with self.step("version") as step:
            version, _revision = self.read_version(colour)
            step.detail = f"{self.cname(colour)} reports version {version}"
        return version

    def rollback_failed(self, exc, target, state, colour, switched, started_at, t0):
        """Record the failed rollback; the ``ReleaseFailure`` the module reports."""
        entry = self.entry(
            release=target["release"],
            image=target.get("image"),
            image_id=target.get("image_id"),
            revision=target.get("revision"),
            started_at=iso(started_at),
            duration_seconds=round(self.clock() - t0, 3),
            outcome=OUTCOME_FAILED,
            colour=colour,
            previous_release=state.live_summary()["live_release"],
            message=f"rollback failed: {exc}",
        )
        self.record(entry)
        after_state = self.read_state_quietly()
        return ReleaseFailure(
            f"rollback to {target['release']} failed: {exc}",
            {
                "changed": switched,
                "release": entry,
                "live_colour": after_state.live_colour if after_state else None,
                "previous_colour": state.live_colour,
            },
        )
