"""A deploy (state=present), told as its steps."""

from dataclasses import dataclass

from ansible.module_utils.montaiguillon.common.clock import iso
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.common.lock import describe_holder, read_holder
from ansible.module_utils.montaiguillon.deploy.plan import (
    COLOURS,
    OUTCOME_FAILED,
    OUTCOME_ROLLED_BACK,
    OUTCOME_SUCCESS,
    ReleaseError,
    choose_target_colour,
    decide_present,
    images_to_prune,
    make_release_id,
    plan_is_settled,
    short_id,
)
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure, StepFailed, went_live


@dataclass
class DeployRun:
    """What one deploy has learnt so far: the ledger entry is written from it, whatever happens."""

    ref: str
    started_at: object
    t0: float
    state: object = None
    serving: str = ""
    image: dict = None
    image_id: str = None
    release: str = None
    colour: str = None
    version: str = None
    revision: str = None
    switch_seconds: float = None
    touched: bool = False
    switched: bool = False


class PresentRelease:
    """state=present: plan, deploy, switch back on failure, prune."""

    # --- state: present ---------------------------------------------------------------

    def present(self):
        self.refuse_during_maintenance()
        if self.check_mode:
            return self.plan_present()
        try:
            return self.finish(self.locked(self.p["image"], self.deploy))
        except ReleaseFailure as failure:
            failure.result["steps"] = self.steps
            raise

    def plan_present(self):
        state = self.read_state()
        before = state.live_summary()
        image = self.engine.local_image(self.p["image"])
        notes = []
        if image is None:
            decision_changed = True
            reason = f"{self.p['image']} is not on the server; a real run would pull it and deploy it"
        else:
            live_health = (lambda: self.probe_serving(state.live_colour)) if state.live_colour else None
            decision = decide_present(state, image["Id"], self.config_for(image["Id"]), live_health)
            decision_changed, reason = decision.changed, decision.reason
            if self.p["pull"]:
                notes.append("check mode does not pull: the result compares with the local copy of the image")
        holder = read_holder(self.lock_path)
        if holder:
            notes.append(f"the change lock is held: {describe_holder(holder)}")
        target = choose_target_colour(state)
        after = (
            {
                "live_colour": target,
                "live_image": self.p["image"],
                "live_release": make_release_id(self.now(), image["Id"]) if image else "(new release)",
            }
            if decision_changed
            else before
        )
        return {
            "changed": decision_changed,
            "msg": reason,
            "notes": notes,
            "live_colour": state.live_colour,
            "previous_colour": state.live_colour,
            "target_colour": target if decision_changed else state.live_colour,
            "release": {},
            "pruned_images": [],
            "steps": [],
            "settled": plan_is_settled(decision_changed, self.p["image"], self.p["pull"], bool(holder)),
            "diff": {"before": before, "after": after},
        }

    def resolve_image(self):
        """Pull (or find) the image; its inspect dict. StepFailed with a clear message otherwise."""
        ref = self.p["image"]
        with self.step("pull") as step:
            if self.p["pull"]:
                try:
                    attrs = self.engine.pull(ref)
                except DockerError as exc:
                    local = self.engine.local_image(ref)
                    where = "the image is on the server but the pull" if local else "the image is not on the server and"
                    raise StepFailed(
                        f"{where} failed, nothing was changed: {exc} (set pull: false to deploy an image loaded "
                        "with docker load)"
                    ) from exc
                step.detail = f"pulled {ref} ({short_id(attrs['Id'])})"
            else:
                attrs = self.engine.local_image(ref)
                if attrs is None:
                    raise StepFailed(
                        f"image {ref} is not on the server and pull is false; nothing was changed "
                        "(load it with docker load, or set pull: true)"
                    )
                step.detail = f"{ref} is on the server ({short_id(attrs['Id'])}), not pulled (pull: false)"
        return attrs

    def deploy(self):
        """The story: read state, plan, migrate, start, health, version, switch, verify, watch, keep warm,
        prune, ledger (the lock is taken and released around it by ``locked``)."""
        run = DeployRun(ref=self.p["image"], started_at=self.now(), t0=self.clock())
        try:
            decision = self.plan_step(run)
            if not decision.changed:
                return self.unchanged(run.state, decision)
            if self.p.get("migrate_command"):
                self.migrate(run.image_id, run.release, run.serving)
            run.touched = True
            self.start_and_wait(
                run.colour, run.image_id, run.ref, run.release, self.p.get("revision"), run.image, run.serving
            )
            run.version, run.revision = self.identify(run.colour, run.image, run.state, run.serving)
            self.switch_step(run)
            self.verify_and_watch(run)
            self.keep_warm_step(run.state)
            entry = self.success_entry(run)
            pruned = self.prune(entry, run.state, run.image_id)
        except (StepFailed, DockerError, ReleaseError, OSError) as exc:
            raise self.deploy_failed(run, exc) from exc
        self.record(entry)
        result = went_live(
            entry, run.state.live_summary(), run.colour, run.ref, run.state.live_colour, run.switch_seconds
        )
        result["pruned_images"] = pruned
        return result

    def plan_step(self, run):
        """Read the state, resolve the image, decide: a new release on the idle colour, or nothing."""
        run.state = state = self.read_state_step()
        run.serving = self.serving_note(state)
        run.image = self.resolve_image()
        run.image_id = run.image["Id"]
        with self.step("plan") as step:
            live_health = (lambda: self.probe_serving(state.live_colour)) if state.live_colour else None
            decision = decide_present(state, run.image_id, self.config_for(run.image_id), live_health)
            step.detail = decision.reason
            if decision.changed:
                run.release = make_release_id(run.started_at, run.image_id)
                run.colour = choose_target_colour(state)
                step.detail += f"; release {run.release} goes to {run.colour}"
        return decision

    @staticmethod
    def unchanged(state, decision):
        before = state.live_summary()
        return {
            "changed": False,
            "msg": decision.reason,
            "release": {},
            "live_colour": state.live_colour,
            "previous_colour": state.idle_colour if state.idle and state.idle.exists else None,
            "switch_seconds": None,
            "pruned_images": [],
            "diff": {"before": before, "after": before},
        }

    def switch_step(self, run):
        with self.step("switch") as step:
            target = run.colour
            seconds = self.switch_to(target, f"live: {target}, release {run.release}, image {run.ref}")
            run.switched = True
            run.switch_seconds = round(seconds, 3)
            step.detail = (
                f"proxy now sends {self.p['proxy_upstream']} to {self.cname(target)}:{self.p['port']} ({seconds:.3f} s)"
            )

    def verify_and_watch(self, run):
        """The new colour is served through the proxy, then watched; any failure switches back."""
        target = run.colour
        try:
            with self.step("verify") as step:
                attempts, _last = self.verify_proxy(target)
                step.detail = f"{self.p['verify_url']} is served by {target} ({attempts} tries)"
            if self.p["verify_window"] > 0:
                with self.step("watch") as step:
                    probes = self.watch(target)
                    window = self.p["verify_window"]
                    step.detail = f"{probes} probes of {self.cname(target)} and the proxy over {window:g} s"
        except StepFailed as exc:
            raise self.switch_back(exc, run.state, target) from exc

    def keep_warm_step(self, state):
        with self.step("keep warm") as step:
            if state.live_colour and state.live is not None and state.live.exists:
                previous = self.cname(state.live_colour)
                step.detail = f"{previous} (release {state.live.release}) stays running for a rollback"
            else:
                step.detail = "no previous release to keep"

    def success_entry(self, run):
        version = run.version
        return self.entry(
            release=run.release,
            image=run.ref,
            image_id=run.image_id,
            config=self.config_for(run.image_id),
            env=dict(self.plain_env),
            version=version,
            revision=self.p.get("revision") or run.revision,
            started_at=iso(run.started_at),
            duration_seconds=round(self.clock() - run.t0, 3),
            switch_seconds=run.switch_seconds,
            outcome=OUTCOME_SUCCESS,
            colour=run.colour,
            previous_release=run.state.live_summary()["live_release"],
            message=f"{run.colour} is live with release {run.release}" + (f" (version {version})" if version else ""),
        )

    def deploy_failed(self, run, exc):
        """Record the failed run in the ledger; the ``ReleaseFailure`` the module reports."""
        message = f"{exc.__class__.__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
        entry = self.entry(
            release=run.release or make_release_id(run.started_at, None),
            image=run.ref,
            image_id=run.image_id,
            version=run.version,
            started_at=iso(run.started_at),
            duration_seconds=round(self.clock() - run.t0, 3),
            switch_seconds=run.switch_seconds,
            outcome=getattr(exc, "outcome", OUTCOME_FAILED),
            colour=run.colour,
            previous_release=run.state.live_summary()["live_release"] if run.state else None,
            message=message,
        )
        self.record(entry)
        after_state = self.read_state_quietly()
        return ReleaseFailure(
            message,
            {
                "changed": run.switched or run.touched,
                "release": entry,
                "live_colour": after_state.live_colour if after_state else None,
                "previous_colour": run.state.live_colour if run.state else None,
                "switch_seconds": run.switch_seconds,
                "pruned_images": [],
            },
        )

    def read_state_step(self):
        """The story's first step: the proxy is there, then which colour is live and what runs."""
        with self.step("read state") as step:
            self.check_proxy()
            state = self.read_state()
            step.detail = self.describe_state(state)
        return state

    def read_state_quietly(self):
        try:
            return self.read_state()
        except (DockerError, OSError):
            return None

    def switch_back(self, exc, state, target):
        """After a failed verification: route back to the previous colour. Returns the StepFailed to raise."""
        previous = state.live_colour
        live = state.live
        if previous is None or live is None or not live.exists:
            return StepFailed(f"{exc}; there is no previous colour to switch back to, {target} stays live")
        with self.step("switch back") as step:
            attrs = self.engine.inspect_container(self.cname(previous))
            if not attrs or not (attrs.get("State") or {}).get("Running"):
                step.result = "failed"
                step.detail = f"{self.cname(previous)} is not running"
                return StepFailed(f"{exc}; cannot switch back: {self.cname(previous)} is not running")
            try:
                seconds = self.switch_to(previous, f"live: {previous}, release {live.release} (switched back)")
            except (StepFailed, DockerError, OSError) as again:
                step.result = "failed"
                step.detail = str(again)
                return StepFailed(f"{exc}; switching back to {previous} FAILED too: {again}")
            step.detail = f"proxy back on {self.cname(previous)} (release {live.release}) in {seconds:.3f} s; " + (
                self.discard(target, drain=True)
            )
        return StepFailed(
            f"{exc}; switched back to {previous} (release {live.release}), which serves again",
            outcome=OUTCOME_ROLLED_BACK,
        )

    def prune(self, entry, state, new_image_id):
        with self.step("prune") as step:
            entries = [*self.read_ledger(), entry]
            protected = {new_image_id}
            for colour in COLOURS:
                c = state.colours[colour]
                if c.exists and c.image_id:
                    protected.add(c.image_id)
            # the container of the target colour was replaced: its old image is no longer protected
            target = state.colours[entry["colour"]]
            if target.exists and target.image_id and target.image_id != new_image_id:
                protected.discard(target.image_id)
            candidates = images_to_prune(entries, self.p["keep_releases"], protected)
            pruned, kept = [], []
            for image_id in candidates:
                try:
                    removed, reason = self.engine.remove_image(image_id)
                except DockerError as exc:
                    kept.append(f"{short_id(image_id)} ({exc})")
                    continue
                if removed:
                    pruned.append(image_id)
                elif reason != "already gone":
                    kept.append(f"{short_id(image_id)} ({reason})")
            step.detail = f"kept the last {self.p['keep_releases']} releases; removed {len(pruned)} image(s)" + (
                f"; left {', '.join(kept)}" if kept else ""
            )
        return pruned
