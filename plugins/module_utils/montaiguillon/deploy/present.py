"""A deploy (state=present), told as its steps."""

import os

from ansible.module_utils.montaiguillon.common.clock import iso
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.lock import DeployLock, read_holder
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
    short_id,
)
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure, StepFailed, went_live


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

    def plan_present(self):
        state = self.read_state()
        before = state.live_summary()
        image = self.engine.local_image(self.p["image"])
        notes = []
        if image is None:
            decision_changed = True
            reason = f"{self.p['image']} is not on the server; a real run would pull it and deploy it"
        else:
            live_health = (lambda: self.probe_health(state.live_colour)) if state.live_colour else None
            decision = decide_present(state, image["Id"], self.config_for(image["Id"]), live_health)
            decision_changed, reason = decision.changed, decision.reason
            if self.p["pull"]:
                notes.append("check mode does not pull: the result compares with the local copy of the image")
        holder = read_holder(os.path.join(self.state_dir, DeployLock.FILE_NAME))
        if holder:
            notes.append(f"a deploy lock is held: {holder.get('who')} since {holder.get('when')}")
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
        started_at = self.now()
        t0 = self.clock()
        ref = self.p["image"]
        ctx = {"image_id": None, "release": make_release_id(started_at, None), "colour": None, "version": None}
        switched = touched = False
        state = None
        try:
            state = self.read_state_step()
            before = state.live_summary()
            previous_colour = state.live_colour
            serving = self.serving_note(state)
            image = self.resolve_image()
            image_id = image["Id"]
            ctx["image_id"] = image_id
            with self.step("plan") as step:
                live_health = (lambda: self.probe_health(state.live_colour)) if state.live_colour else None
                decision = decide_present(state, image_id, self.config_for(image_id), live_health)
                release_id = make_release_id(started_at, image_id)
                target = choose_target_colour(state)
                step.detail = decision.reason
                if decision.changed:
                    step.detail += f"; release {release_id} goes to {target}"
            if not decision.changed:
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
            ctx["release"] = release_id
            ctx["colour"] = target

            if self.p.get("migrate_command"):
                self.migrate(image_id, release_id, serving)

            touched = True
            self.start_and_wait(target, image_id, ref, release_id, self.p.get("revision"), image, serving)

            version, revision = self.identify(target, image, state, serving)
            ctx["version"] = version

            with self.step("switch") as step:
                switch_seconds = self.switch_to(target, f"live: {target}, release {release_id}, image {ref}")
                switched = True
                ctx["switch_seconds"] = round(switch_seconds, 3)
                step.detail = (
                    f"proxy now sends {self.p['proxy_upstream']} to {self.cname(target)}:{self.p['port']} "
                    f"({switch_seconds:.3f} s)"
                )

            try:
                with self.step("verify") as step:
                    attempts, _last = self.verify_proxy(target)
                    step.detail = f"{self.p['verify_url']} is served by {target} ({attempts} tries)"
                if self.p["verify_window"] > 0:
                    with self.step("watch") as step:
                        probes = self.watch(target)
                        step.detail = (
                            f"{probes} probes of {self.cname(target)} and the proxy over {self.p['verify_window']:g} s"
                        )
            except StepFailed as exc:
                raise self.switch_back(exc, state, target) from exc

            with self.step("keep warm") as step:
                if previous_colour and state.live is not None and state.live.exists:
                    step.detail = (
                        f"{self.cname(previous_colour)} (release {state.live.release}) stays running for a rollback"
                    )
                else:
                    step.detail = "no previous release to keep"

            entry = self.entry(
                release=release_id,
                image=ref,
                image_id=image_id,
                config=self.config_for(image_id),
                version=version,
                revision=self.p.get("revision") or revision,
                started_at=iso(started_at),
                duration_seconds=round(self.clock() - t0, 3),
                switch_seconds=ctx["switch_seconds"],
                outcome=OUTCOME_SUCCESS,
                colour=target,
                previous_release=before["live_release"],
                message=f"{target} is live with release {release_id}" + (f" (version {version})" if version else ""),
            )
            pruned = self.prune(entry, state, image_id)
        except (StepFailed, DockerError, ReleaseError, OSError) as exc:
            outcome = getattr(exc, "outcome", OUTCOME_FAILED)
            message = str(exc)
            if isinstance(exc, OSError):
                message = f"{exc.__class__.__name__}: {exc}"
            entry = self.entry(
                release=ctx["release"],
                image=ref,
                image_id=ctx["image_id"],
                version=ctx["version"],
                started_at=iso(started_at),
                duration_seconds=round(self.clock() - t0, 3),
                switch_seconds=ctx.get("switch_seconds"),
                outcome=outcome,
                colour=ctx["colour"],
                previous_release=state.live_summary()["live_release"] if state else None,
                message=message,
            )
            self.record(entry)
            after_state = self.read_state_quietly()
            raise ReleaseFailure(
                message,
                {
                    "changed": switched or touched,
                    "release": entry,
                    "live_colour": after_state.live_colour if after_state else None,
                    "previous_colour": state.live_colour if state else None,
                    "switch_seconds": ctx.get("switch_seconds"),
                    "pruned_images": [],
                },
            ) from exc
        self.record(entry)
        result = went_live(entry, before, target, ref, previous_colour, ctx["switch_seconds"])
        result["pruned_images"] = pruned
        return result

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
