#!/usr/bin/python
"""Zero-downtime blue/green releases of the Montaiguillon app behind nginx."""

DOCUMENTATION = r"""
---
module: bluegreen_release
short_description: Zero-downtime blue/green release of a containerised web app behind an nginx proxy container
description:
  - Runs on the server itself (the Docker engine and the proxy's configuration directory are local).
  - Two app containers, C({name}-blue) and C({name}-green), take turns. The B(live) colour is the one the
    upstream file in the proxy's C(conf.d) points at; the other is B(idle).
  - "O(state=present) deploys O(image) as a story of steps, each returned in RV(steps) with its duration:
    lock, read state, pull, plan, migrate (optional), start the idle colour, wait for health, read its
    C(/version), switch the proxy, verify through the proxy, watch for O(verify_window) seconds (switching
    back automatically on any failure), keep the previous colour warm, prune old images, write the ledger,
    unlock."
  - "O(state=rolled_back) brings back an earlier release (by default the one live before the current one):
    if its container is still warm on the idle colour and healthy, only the proxy is switched; otherwise
    the idle colour is started again from that release's image, which must still be on the server."
  - O(state=status) only reads and returns the colours, their releases and health, the lock holder and the
    ledger.
  - "O(state=present) is refused, in check mode too and before anything changes, while the proxy role's
    maintenance flag C({proxy_conf_dir}/maintenance/on) exists: a restore runs behind that page, and a
    deploy would migrate a half-restored database. A rollback (no migration) is not refused."
  - "B(Proxy contract): the module owns one file, C({proxy_conf_dir}/{name}-upstream.conf), containing
    C(upstream {proxy_upstream} { server {name}-{colour}:{port} max_fails=0; keepalive 32; }). The proxy's
    server blocks (written by the proxy role) C(proxy_pass http://{proxy_upstream};) with
    C(proxy_http_version 1.1) and an empty C(Connection) header. A switch writes that file atomically
    (temporary file in the same directory, then rename; the directory is bind-mounted on the proxy's
    C(/etc/nginx/conf.d)), runs C(nginx -t) in the proxy container (restoring the previous file and failing
    if it is refused) and C(nginx -s reload), which is graceful: old workers finish their requests.
    nginx resolves the container name through Docker's DNS at reload, so the proxy and the app must share
    the first network of O(networks). The module also owns C({name}-slot.conf), an nginx C(map) defining
    C(${proxy_upstream}_slot) as the live colour; the proxy's server block adds it to every answer as
    C(X-Montaiguillon-Slot), and the switch is verified through the proxy by that header."
  - "B(App contract): the app listens on O(port) and C(GET {health_path}) answers 2xx when ready; that is all.
    It should finish in-flight requests on SIGTERM. O(version_path) is an optional extra. Migrations, when
    O(migrate_command) is set, run in a one-off container of the B(new) image with the B(new) O(env), on the
    same networks, removed afterwards; the live release keeps serving during them, so they must be backward
    compatible."
  - "The module probes the app directly over HTTP at the container's address on the first network of
    O(networks) (the server can reach its bridge networks), with short timeouts."
  - "B(State): the containers' labels (C(montaiguillon.app), C(.colour), C(.release), C(.image),
    C(.image_id), C(.revision), C(.version)) and the ledger C({state_dir}/releases.jsonl), one JSON object
    per release attempt. Docker cannot change a container's labels once it exists, so C(montaiguillon.version)
    holds the version the image declares in its C(org.opencontainers.image.version) label (empty if none);
    the version C(/version) reported is in the ledger entry."
version_added: "0.1.0"
author:
  - Montaiguillon infrastructure
requirements:
  - Python 3.11 on the server
  - The Docker SDK for Python 5.0.3 or later on the server (Debian 12 package C(python3-docker))
  - A running proxy container (nginx, the official image or C(lab/images/proxy)) whose C(/etc/nginx/conf.d)
    is the host directory O(proxy_conf_dir)
attributes:
  check_mode:
    support: full
    description:
      - Nothing is pulled, started, switched, pruned or written; the result says whether a deploy or rollback
        would happen, with O(ignore:diff). When the image is not on the server yet, the result is
        C(changed=true) with a note (it would be pulled).
  diff_mode:
    support: full
    description:
      - Returns C(before) and C(after) with C(live_colour), C(live_image) and C(live_release).
  idempotent:
    support: full
    description:
      - Deploying the image the live colour already runs (same local image id, running, routed by the proxy,
        answering its health check) with the same configuration, or rolling back to the release already live,
        changes nothing and writes no ledger entry. A live release that no longer answers its health check is
        replaced by a fresh container of the same image on the other colour.
      - A release is the image and its configuration. A changed O(env) or O(secret_env) value, O(port),
        O(networks) or O(confinement) with the same image is a new blue/green release (the new colour starts
        with the new configuration, then takes the traffic), so a rotated password reaches the site without
        downtime. The container label C(montaiguillon.config) and the ledger entry's C(config) hold a digest
        of that configuration (secret values hashed, never recorded).
options:
  state:
    description:
      - V(present) deploys O(image); V(rolled_back) returns to an earlier release; V(status) only reports.
    type: str
    choices: [present, rolled_back, status]
    default: present
  name:
    description:
      - Name of the app. Containers are C({name}-blue) and C({name}-green), the upstream file is
        C({name}-upstream.conf), one-off migration containers are C({name}-migrate).
    type: str
    default: app
  image:
    description:
      - Image to deploy, as a tag (C(ghcr.io/org/site:3f2a9c1)) or a digest reference
        (C(ghcr.io/org/site@sha256:...)). Required with O(state=present).
    type: str
  pull:
    description:
      - Pull O(image) before deploying. A failed pull fails the deploy and changes nothing.
      - With V(false) the image must already be on the server (for example loaded with C(docker load)).
    type: bool
    default: true
  env:
    description:
      - Environment of the app container and of the migration container (non-secret settings).
      - A cold rollback (the release's container is gone) starts the old image with this environment too.
    type: dict
    default: {}
  secret_env:
    description:
      - Secret part of the environment (passwords), merged over O(env). Hidden from logs; kept apart from
        O(env) so that Ansible's masking of secret values does not blank ordinary words in the output.
      - C(docker inspect) shows these values; prefer O(secret_files) for what the serving slots need.
    type: dict
    default: {}
  secret_files:
    description:
      - Secrets the serving slots read from files, never from their environment. For each C(NAME), the slot
        gets a read-only C(/run/secrets/NAME) (mode 0400, owned by the image's user) and the variable
        C(NAME_FILE) naming it; C(docker inspect) shows only the mount. The files live in
        C({state_dir}/secrets/{colour}) (0700). The one-off migration gets the values in its environment.
    type: dict
    default: {}
  files_owner:
    description:
      - C(uid[:gid]) owning the secret files, for an image whose C(USER) is a name rather than a number.
        Default, the image's numeric C(USER) (root when it has none).
    type: str
  volumes:
    description:
      - "Docker named volumes both slots and the migration mount, as C(key: /path/in/container); each is named
        C({name}_{key}) on the server. What the site keeps across releases and rollbacks (uploads). Host paths
        are refused, and so are system directories."
    type: dict
    default: {}
  migrate_secret_env:
    description:
      - Secrets only the one-off migration gets (the migrations account's password), never the serving slots.
    type: dict
    default: {}
  networks:
    description:
      - Docker networks the app containers join, all of them. The first one is shared with the proxy and is
        where the module probes the app, so it must not be an C(internal) network.
    type: list
    elements: str
    default: [montaiguillon_frontend, montaiguillon_backend]
  port:
    description: Port the app listens on inside its container (1-65535).
    type: int
    default: 8000
  health_path:
    description: Path answering 200 when the app is ready to serve.
    type: str
    default: /health
  health_timeout:
    description:
      - Seconds a new container has to become healthy. On timeout the deploy fails with the last health
        answer and the container's last log lines; the live colour keeps serving.
    type: float
    default: 60
  health_interval:
    description: Seconds between health probes (also the probe period of the O(verify_window)).
    type: float
    default: 1
  migrate_command:
    description:
      - Command run in a one-off container of the new image before the new colour starts, for example
        C(["python3", "-m", "montaiguillon_site", "migrate"]). A non-zero exit fails the deploy with its
        last output lines; nothing is switched.
      - Take a database snapshot before calling the module (and pass it as O(snapshot)).
    type: list
    elements: str
  migrate_timeout:
    description: Seconds the migration may take.
    type: float
    default: 600
  proxy_container:
    description: Name of the running nginx container.
    type: str
    default: proxy
  proxy_conf_dir:
    description: Host directory bind-mounted on the proxy's C(/etc/nginx/conf.d).
    type: path
    default: /etc/montaiguillon/proxy/conf.d
  proxy_upstream:
    description: Name of the nginx C(upstream) block the server blocks C(proxy_pass) to.
    type: str
    default: montaiguillon_app
  verify_url:
    description:
      - URL fetched through the proxy after the switch until a 2xx answer carries the proxy's
        C(X-Montaiguillon-Slot) header naming the new colour (the app need not know about it).
        Redirects are not followed.
    type: str
    default: https://127.0.0.1/
  version_path:
    description:
      - "Optional. A path of the app answering JSON with C(version) and C(revision) keys and an
        C(X-App-Version) header equal to that version (the sample site's C(/version)). When set, the new
        colour is asked before the switch and the ledger records what it says; when empty the release is
        named by its image (and the image's C(org.opencontainers.image.version) label, if any)."
    type: str
    default: ""
  verify_host:
    description: C(Host) header (and TLS server name) sent with O(verify_url), for example the site's name.
    type: str
  verify_tls:
    description: Verify the proxy's certificate. V(false) suits self-signed lab certificates.
    type: bool
    default: false
  verify_timeout:
    description: Seconds the proxy has to serve the new version after the switch.
    type: float
    default: 10
  verify_window:
    description:
      - Seconds after the switch during which the new container's health and the proxy are probed every
        O(health_interval). Any failure switches back to the previous colour (outcome C(rolled_back)) and
        fails the task. V(0) skips the window.
    type: float
    default: 5
  keep_releases:
    description:
      - Images of this many most recent releases in the ledger are kept, plus the images of the live and idle
        containers. Older images this module deployed are removed (those still in use are left).
    type: int
    default: 5
  keep_failed:
    description: Keep a new container that failed its health check or was switched away from, to inspect it.
    type: bool
    default: false
  state_dir:
    description: Directory of the lock and the ledger. Defaults to C(/var/lib/montaiguillon/{name}).
    type: path
  requested_by:
    description: Who asks for the release (recorded in the lock and the ledger). Defaults to C(user@host).
    type: str
  revision:
    description: Source revision of the image (for example the git sha), recorded in labels and ledger.
    type: str
  pipeline_run:
    description: Free text identifying the pipeline run (for example its URL), recorded in the ledger.
    type: str
  snapshot:
    description: Free-form description of the database snapshot taken before the deploy, recorded in the ledger.
    type: dict
  release:
    description:
      - With O(state=rolled_back), the release id to return to. Empty means the release that was live before
        the current one.
    type: str
  lock_wait:
    description:
      - Seconds to wait for a deploy that holds the lock and is still running (for example one whose
        controller was killed, the module goes on on the server) before failing. 0 fails at once.
    type: float
    default: 0
  break_lock:
    description: Take the deploy lock even if another deploy appears to hold it. Only when that deploy is dead.
    type: bool
    default: false
  history:
    description: Number of ledger entries returned by O(state=status).
    type: int
    default: 10
  docker_host:
    description: Docker daemon URL. Defaults to E(DOCKER_HOST) or C(unix:///var/run/docker.sock).
    type: str
  confinement:
    description:
      - What the release's containers (both slots and the one-off migration) may do. The defaults suit an image
        that runs as a non-root user on a port above 1023 and needs no Linux capability.
      - Applied when a container is created, so a change reaches the next release (or a redeploy).
    type: dict
    default: {}
    suboptions:
      capabilities:
        description:
          - Linux capabilities kept (for example V(NET_BIND_SERVICE)); every other one is dropped.
        type: list
        elements: str
        default: []
      no_new_privileges:
        description: Forbid privilege gain through setuid or file capabilities (C(no-new-privileges)).
        type: bool
        default: true
      read_only:
        description: Mount the image's root filesystem read-only, with a private tmpfs on each O(confinement.tmpfs).
        type: bool
        default: false
      tmpfs:
        description: Writable scratch directories when O(confinement.read_only=true).
        type: list
        elements: str
        default: [/tmp]
      memory:
        description: Memory limit (Docker notation, for example V(512m), V(1g)); no swap beyond it. At least V(32m).
        type: str
        default: 512m
      pids_limit:
        description: Maximum number of processes and threads in each container (at least 16).
        type: int
        default: 256
notes:
  - One deploy at a time per O(state_dir). A second one fails with who holds the lock, since when and for what.
    A lock whose process is dead (same boot) or which predates a reboot is taken over with a warning.
  - The previous colour stays running after a deploy, so a rollback to it is a proxy switch of a few
    milliseconds.
  - Written for the Docker SDK 5.0.3 API; newer SDKs work too.
seealso:
  - name: nginx upstream module
    description: The upstream, server and keepalive directives the module writes.
    link: https://nginx.org/en/docs/http/ngx_http_upstream_module.html
"""

EXAMPLES = r"""
- name: Deploy the site's new image
  bluegreen_release:
    name: app
    image: "ghcr.io/montaiguillon/site@{{ site_image_digest }}"
    revision: "{{ site_revision }}"
    pipeline_run: "{{ lookup('ansible.builtin.env', 'GITHUB_RUN_URL') | default('manual', true) }}"
    requested_by: "{{ lookup('ansible.builtin.env', 'USER') }}"
    env:
      DATABASE_HOST: mysql
      DATABASE_NAME: montaiguillon
      DATABASE_USER: montaiguillon
      DATABASE_PASSWORD: "{{ mysql_app_password }}"
    migrate_command: [python3, -m, montaiguillon_site, migrate]
    snapshot: "{{ pre_deploy_snapshot.snapshot }}"
    verify_host: "{{ site_hostname }}"
  register: site_release

- name: Show how long the switch took
  ansible.builtin.debug:
    msg: >-
      {{ site_release.release.release }} is live on {{ site_release.live_colour }},
      switched in {{ site_release.switch_seconds }} s

- name: Roll back to the release that was live before
  bluegreen_release:
    name: app
    state: rolled_back
    env: "{{ site_env }}"
    verify_host: "{{ site_hostname }}"

- name: Roll back to a named release
  bluegreen_release:
    name: app
    state: rolled_back
    release: 20261126T093000Z-3f2a9c1d
    env: "{{ site_env }}"

- name: Read the release state (never changes anything)
  bluegreen_release:
    name: app
    state: status
    history: 20
  register: site_status
"""

RETURN = r"""
changed:
  description: Whether a release was made live (or, in check mode, would be).
  returned: always
  type: bool
release:
  description:
    - The ledger entry of this run (also appended to C({state_dir}/releases.jsonl)). Empty when nothing changed.
    - On failure it is returned too, with C(outcome) V(failed) or V(rolled_back) and the reason in C(message).
  returned: state is present or rolled_back
  type: dict
  sample:
    release: 20261126T093000Z-3f2a9c1d
    image: ghcr.io/montaiguillon/site@sha256:3f2a9c1d...
    image_id: sha256:3f2a9c1d...
    version: 1.4.0
    revision: 9b1c2d3
    pipeline_run: https://github.com/montaiguillon/site/actions/runs/42
    requested_by: alice
    started_at: "2026-11-26T09:30:00Z"
    finished_at: "2026-11-26T09:30:14Z"
    duration_seconds: 14.2
    switch_seconds: 0.041
    outcome: success
    colour: green
    previous_release: 20261120T151000Z-77aa01bc
    snapshot: {id: pre-deploy-20261126T0929, path: /var/backups/montaiguillon/...}
    message: green is live with release 20261126T093000Z-3f2a9c1d (version 1.4.0)
live_colour:
  description: Colour serving the traffic at the end of the run (null when none).
  returned: always
  type: str
  sample: green
previous_colour:
  description: Colour that was live before this run and stays warm for a rollback.
  returned: state is present or rolled_back
  type: str
  sample: blue
idle_colour:
  description: The colour not serving.
  returned: state is status
  type: str
switch_seconds:
  description: Time to write the upstream file, test the configuration and reload nginx.
  returned: when the proxy was switched
  type: float
  sample: 0.041
steps:
  description: What the run did, in order, each with its duration in seconds, C(result) and C(detail).
  returned: state is present or rolled_back
  type: list
  elements: dict
  sample:
    - {step: lock, seconds: 0.001, result: ok, detail: "taken by alice"}
    - {step: switch, seconds: 0.041, result: ok, detail: "proxy now sends montaiguillon_app to app-green:8000"}
pruned_images:
  description: Ids of the images removed by retention.
  returned: state is present
  type: list
  elements: str
diff:
  description: Live colour, image and release before and after.
  returned: state is present or rolled_back
  type: dict
  sample:
    before: {live_colour: blue, live_image: "ghcr.io/montaiguillon/site:1.3.0", live_release: 20261120T151000Z-77aa01bc}
    after: {live_colour: green, live_image: "ghcr.io/montaiguillon/site:1.4.0", live_release: 20261126T093000Z-3f2a9c1d}
colours:
  description: Per colour, its container status, release, image, revision, version (as reported now) and health.
  returned: state is status
  type: dict
lock:
  description: The deploy lock holder (who, when, what, pid), or null when nobody deploys.
  returned: state is status
  type: dict
releases:
  description: The last O(history) ledger entries, oldest first.
  returned: state is status
  type: list
  elements: dict
"""

import getpass
import json
import os
import socket
import time
import traceback
from contextlib import contextmanager

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.common.clock import iso, utcnow
from ansible.module_utils.montaiguillon.common.docker_engine import DockerEngine, DockerError, get_client
from ansible.module_utils.montaiguillon.common.files import read_text
from ansible.module_utils.montaiguillon.deploy.confinement import Confinement, confinement_spec
from ansible.module_utils.montaiguillon.deploy.fingerprint import config_digest
from ansible.module_utils.montaiguillon.deploy.ledger import ReleaseLedger, with_snapshot_state
from ansible.module_utils.montaiguillon.deploy.lock import DeployLock, LockHeld, read_holder
from ansible.module_utils.montaiguillon.deploy.plan import (
    COLOURS,
    LABEL_APP,
    LABEL_RELEASE,
    OUTCOME_FAILED,
    OUTCOME_ROLLBACK,
    OUTCOME_ROLLED_BACK,
    OUTCOME_SUCCESS,
    ReleaseError,
    choose_target_colour,
    container_labels,
    container_name,
    decide_present,
    find_release,
    image_declared_version,
    images_to_prune,
    make_release_id,
    previous_release,
    read_state,
    short_id,
    tail_lines,
    upstream_file_name,
    validate_params,
)
from ansible.module_utils.montaiguillon.deploy.probe import PROBE_TIMEOUT, HttpProbe, ProbeError, poll_until_ok
from ansible.module_utils.montaiguillon.deploy.proxy import SLOT_HEADER, Proxy, ProxyError, slot_file_name
from ansible.module_utils.montaiguillon.deploy.secret_files import (
    SecretFileError,
    file_owner,
    file_variables,
    name_errors,
    write_secret_files,
)
from ansible.module_utils.montaiguillon.deploy.volumes import volume_errors, volume_mounts

STOP_TIMEOUT = 10
DRAIN_SECONDS = 2.0
LOG_LINES = 20


# --- the proxy's nginx workers ------------------------------------------------


# --- the release manager -------------------------------------------------------


class ReleaseFailure(Exception):
    """The run failed; ``result`` holds what to return with fail_json."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result or {}


class StepFailed(Exception):
    """A step of a release failed; ``outcome`` is what the ledger records."""

    def __init__(self, message, outcome=OUTCOME_FAILED):
        super().__init__(message)
        self.outcome = outcome


class Step:
    def __init__(self, name):
        self.name = name
        self.detail = ""
        self.result = "ok"


def went_live(entry, before, colour, image, previous_colour, switch_seconds):
    """The module's result when a deploy or a rollback made ``entry``'s release live on ``colour``."""
    return {
        "changed": True,
        "msg": entry["message"],
        "release": entry,
        "live_colour": colour,
        "previous_colour": previous_colour,
        "switch_seconds": switch_seconds,
        "diff": {
            "before": before,
            "after": {"live_colour": colour, "live_image": image, "live_release": entry["release"]},
        },
    }


class BlueGreenRelease:
    """Reads the state, decides, acts (outside check mode) and tells the story in ``steps``."""

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
        self.upstream_path = os.path.join(params["proxy_conf_dir"], upstream_file_name(self.name))
        self.ledger = ReleaseLedger.in_dir(self.state_dir)
        self.proxy = Proxy(
            engine,
            params["proxy_container"],
            params["proxy_conf_dir"],
            self.upstream_path,
            self.clock,
            self.sleep,
            self.warn,
            slot_path=os.path.join(params["proxy_conf_dir"], slot_file_name(self.name)),
        )
        self.requested_by = params.get("requested_by") or f"{getpass.getuser()}@{socket.gethostname()}"
        self.confinement = Confinement.from_params(params)
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
            **(self.p.get("env") or {}),
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

    def check_proxy(self):
        """The proxy must run and its conf.d must be here; fail before touching anything otherwise."""
        try:
            self.proxy.check()
        except ProxyError as exc:
            raise StepFailed(str(exc)) from exc

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
        name = self.cname(colour)
        self.engine.remove_container(name, stop_timeout=STOP_TIMEOUT)
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
            running_then_probe, timeout, self.p["health_interval"], self.clock, self.sleep
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
        """Probe the new container and the proxy for verify_window seconds; StepFailed on any failure."""
        window = self.p["verify_window"]
        deadline = self.clock() + window
        probes = 0
        while self.clock() < deadline:
            ok, last = self.probe_health(colour)
            if not ok:
                raise StepFailed(
                    f"{self.cname(colour)} failed its health check {probes + 1} s after the switch: {last}"
                )
            ok, last = self.probe_proxy(colour)
            if not ok:
                raise StepFailed(f"the proxy check failed after the switch: {last}")
            probes += 1
            self.sleep(self.p["health_interval"])
        return probes

    # --- results --------------------------------------------------------------------

    def entry(self, **fields):
        base = {
            "release": None,
            "image": None,
            "image_id": None,
            "config": None,
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
        lock = DeployLock.in_dir(self.state_dir, who=self.requested_by, what=what, break_lock=self.p["break_lock"])
        with self.step("lock") as step:
            deadline = self.clock() + (self.p.get("lock_wait") or 0)
            waited = False
            while True:
                try:
                    warnings = lock.acquire()
                    break
                except LockHeld as exc:
                    # A deploy whose controller died keeps running on the server: wait for it to finish.
                    if self.clock() < deadline:
                        waited = True
                        self.sleep(1)
                        continue
                    suffix = f" (waited {self.p['lock_wait']:g} s)" if waited else ""
                    raise ReleaseFailure(str(exc) + suffix, {"changed": False, "lock": exc.holder}) from exc
                except OSError as exc:
                    raise ReleaseFailure(f"cannot take the deploy lock {lock.path}: {exc}") from exc
            for warning in warnings:
                self.warn(warning)
            step.detail = f"taken by {self.requested_by}" + (f" ({'; '.join(warnings)})" if warnings else "")
            if waited:
                step.detail += " after waiting for the deploy that held it"
        return lock

    def locked(self, what, body):
        """Run ``body()`` holding the lock; the lock is released whatever happens."""
        lock = self.take_lock(what)
        try:
            return body()
        finally:
            with self.step("unlock") as step:
                lock.release()
                step.detail = f"released {lock.path}"

    def finish(self, result):
        result["steps"] = self.steps
        return result

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
        started_at = self.now()
        t0 = self.clock()
        switched = False
        colour = None
        state = state_before_lock
        try:
            state = self.read_state_step()
            before = state.live_summary()
            colour = choose_target_colour(state)
            idle = state.colours[colour]
            serving = self.serving_note(state)
            warm = False
            with self.step("plan") as step:
                if idle.exists and idle.running and idle.release == target["release"]:
                    ok, last = self.probe_health(colour)
                    warm = ok
                    step.detail = f"{self.cname(colour)} still runs release {target['release']}" + (
                        ": warm, only the proxy switches" if ok else f" but is unhealthy ({last}): starting it again"
                    )
                else:
                    step.detail = f"{self.cname(colour)} does not run release {target['release']}: starting it again"
            if not warm:
                image_id = target.get("image_id")
                image = self.engine.local_image(image_id) if image_id else None
                if image is None:
                    raise StepFailed(
                        f"the image of release {target['release']} ({target.get('image')}, {short_id(image_id)}) "
                        "is no longer on the server (pruned?); deploy it again with state=present "
                        f"image={target.get('image')}; {serving}"
                    )
                self.start_and_wait(
                    colour, image_id, target.get("image"), target["release"], target.get("revision"), image, serving
                )
            version = target.get("version")
            if self.p["version_path"]:
                with self.step("version") as step:
                    version, _revision = self.read_version(colour)
                    step.detail = f"{self.cname(colour)} reports version {version}"
            with self.step("switch") as step:
                seconds = self.switch_to(colour, f"live: {colour}, release {target['release']} (rollback)")
                switched = True
                step.detail = f"proxy now sends {self.p['proxy_upstream']} to {self.cname(colour)} ({seconds:.3f} s)"
            with self.step("verify") as step:
                attempts, last = self.verify_proxy(colour)
                step.detail = f"{self.p['verify_url']} is served by {colour} ({attempts} tries)"
            entry = self.entry(
                release=target["release"],
                image=target.get("image"),
                image_id=target.get("image_id"),
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
            raise ReleaseFailure(
                f"rollback to {target['release']} failed: {exc}",
                {
                    "changed": switched,
                    "release": entry,
                    "live_colour": after_state.live_colour if after_state else None,
                    "previous_colour": state.live_colour,
                },
            ) from exc
        self.record(entry)
        return went_live(entry, before, colour, target.get("image"), before["live_colour"], entry["switch_seconds"])

    # --- state: status ------------------------------------------------------------------

    def status(self):
        state = self.read_state()
        colours = {}
        for colour in COLOURS:
            c = state.colours[colour]
            info = c.summary()
            info["live"] = colour == state.live_colour
            info["container"] = self.cname(colour)
            if c.running:
                info["healthy"], info["health"] = self.probe_health(colour)
                try:
                    info["reported_version"], info["reported_revision"] = self.read_version(colour)
                except StepFailed as exc:
                    info["reported_version"], info["reported_revision"] = None, None
                    info["version_error"] = str(exc)
            else:
                info["healthy"], info["health"] = False, "not running"
            colours[colour] = info
        history = self.p["history"]
        releases = with_snapshot_state(self.read_ledger()[-history:]) if history else []
        holder = read_holder(os.path.join(self.state_dir, DeployLock.FILE_NAME))
        return {
            "changed": False,
            "live_colour": state.live_colour,
            "idle_colour": state.idle_colour,
            "colours": colours,
            "live": colours.get(state.live_colour) if state.live_colour else None,
            "idle": colours.get(state.idle_colour),
            "lock": {k: v for k, v in holder.items() if k != "token"} if holder is not None else None,
            "releases": releases,
            "upstream_file": self.upstream_path,
        }

    def run(self):
        state = self.p["state"]
        if state == "present":
            return self.present()
        if state == "rolled_back":
            return self.rolled_back()
        return self.status()


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def argument_spec():
    return {
        "state": {"type": "str", "default": "present", "choices": ["present", "rolled_back", "status"]},
        "name": {"type": "str", "default": "app"},
        "image": {"type": "str"},
        "pull": {"type": "bool", "default": True},
        "env": {"type": "dict", "default": {}},
        "secret_env": {"type": "dict", "default": {}, "no_log": True},
        "networks": {
            "type": "list",
            "elements": "str",
            "default": ["montaiguillon_frontend", "montaiguillon_backend"],
        },
        "port": {"type": "int", "default": 8000},
        "health_path": {"type": "str", "default": "/health"},
        "health_timeout": {"type": "float", "default": 60},
        "health_interval": {"type": "float", "default": 1},
        "migrate_command": {"type": "list", "elements": "str"},
        "migrate_timeout": {"type": "float", "default": 600},
        "proxy_container": {"type": "str", "default": "proxy"},
        "proxy_conf_dir": {"type": "path", "default": "/etc/montaiguillon/proxy/conf.d"},
        "proxy_upstream": {"type": "str", "default": "montaiguillon_app"},
        "verify_url": {"type": "str", "default": "https://127.0.0.1/"},
        "version_path": {"type": "str", "default": ""},
        "verify_host": {"type": "str"},
        "verify_tls": {"type": "bool", "default": False},
        "verify_timeout": {"type": "float", "default": 10},
        "verify_window": {"type": "float", "default": 5},
        "keep_releases": {"type": "int", "default": 5},
        "keep_failed": {"type": "bool", "default": False},
        "state_dir": {"type": "path"},
        "requested_by": {"type": "str"},
        "revision": {"type": "str"},
        "pipeline_run": {"type": "str"},
        "snapshot": {"type": "dict"},
        "release": {"type": "str"},
        "break_lock": {"type": "bool", "default": False},
        "lock_wait": {"type": "float", "default": 0},
        "history": {"type": "int", "default": 10},
        "docker_host": {"type": "str"},
        "confinement": confinement_spec(),
        "secret_files": {"type": "dict", "default": {}, "no_log": True},
        "files_owner": {"type": "str"},
        "migrate_secret_env": {"type": "dict", "default": {}, "no_log": True},
        "volumes": {"type": "dict", "default": {}},
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("state", "present", ["image"])],
        supports_check_mode=True,
    )
    errors = (
        validate_params(module.params)
        + Confinement.from_params(module.params).errors()
        + name_errors(module.params.get("secret_files"))
        + volume_errors(module.params.get("volumes"))
    )
    if errors:
        module.fail_json(msg="; ".join(errors))
    try:
        engine = DockerEngine(get_client(module.params.get("docker_host")))
    except DockerError as exc:
        module.fail_json(msg=str(exc))
    manager = BlueGreenRelease(module.params, engine, check_mode=module.check_mode, warn=module.warn)
    try:
        result = manager.run()
    except ReleaseFailure as failure:
        module.fail_json(msg=str(failure), **failure.result)
    except (DockerError, OSError, ReleaseError) as exc:
        module.fail_json(msg=f"{exc.__class__.__name__}: {exc}", steps=manager.steps)
    except Exception as exc:  # a bug: still say what happened, with the traceback
        module.fail_json(msg=f"unexpected error: {exc}", exception=traceback.format_exc(), steps=manager.steps)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
