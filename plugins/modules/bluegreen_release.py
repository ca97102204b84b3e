#!/usr/bin/python
"""Zero-downtime blue/green releases of the Montaiguillon app behind nginx."""
# Over 400 lines for its documentation: DOCUMENTATION, EXAMPLES and RETURN are 445 of them (what
# ansible-doc shows); the code is the argument spec and main, the work is in module_utils/montaiguillon.

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
  - "The idle colour's old container (the release before the live one) is not waited for: it is moved aside
    (restart policy off, renamed C({name}-{colour}-retired-{id}), sent its stop signal) so that the new
    container takes its name at once, and removed, with a 10 s stop timeout, when the deploy or rollback ends,
    whatever its outcome; so are any such containers a run that died left behind."
  - "The module probes the app directly over HTTP at the container's address on the first network of
    O(networks) (the server can reach its bridge networks), with short timeouts."
  - "B(State): the containers' labels (C(montaiguillon.app), C(.colour), C(.release), C(.image),
    C(.image_id), C(.revision), C(.version)) and the ledger C({state_dir}/releases.jsonl), one JSON object
    per release attempt. Docker cannot change a container's labels once it exists, so C(montaiguillon.version)
    holds the version the image declares in its C(org.opencontainers.image.version) label (empty if none);
    the version C(/version) reported is in the ledger entry."
version_added: "0.1.0"
author:
  - Montaiguillon infrastructure (@montaiguillon)
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
        answering its health check, served through the proxy) with the same configuration, or rolling back to
        the release already live, changes nothing and writes no ledger entry. A live release that no longer
        answers its health check, or that the proxy no longer reaches (a container re-created by hand gets
        another address, which nginx learns only at its next reload), is replaced by a fresh container of the
        same image on the other colour.
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
      - Recorded in the release's ledger entry (never put a secret here), so that a cold rollback (the
        release's container is gone) starts the old image with the environment it ran with; its secrets
        are this run's O(secret_env) and O(secret_files).
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
  topology:
    description:
      - "C(single): the blue/green pair on this server's engine (everything above). C(swarm): the app is a
        Docker Swarm service of O(replicas) tasks named O(name), and the module runs on a swarm manager (the
        entry node, with the proxy, the lock and the ledger). Swarm rolls a release out one task at a time,
        C(order: start-first), counting a new task only once its health check passes (the image's
        C(HEALTHCHECK) polled every O(health_interval) s, or O(healthcheck_command)), and rolls back by itself
        when a task fails during the rollout or its O(verify_window) s monitor. The service uses
        C(endpoint_mode: dnsrr): the proxy resolves O(name) to the running tasks (no VIP). The image is
        deployed by its registry digest so every node runs the same bits; O(secret_files) become Docker
        secrets (one per release, mounted at C(/run/secrets/NAME)); O(secret_env) and O(volumes) are refused.
        Migrations run in a one-off container on the manager, on O(networks), before the rollout. A rollback
        rolls out an earlier release of the ledger. See docs/scale.md."
    type: str
    choices: [single, swarm]
    default: single
  replicas:
    description:
      - With O(topology=swarm), the number of tasks of the service (at least 1).
    type: int
    default: 2
  healthcheck_command:
    description:
      - "With O(topology=swarm), the health check command run in each task (exec form, for example
        C([python3, -m, app, healthcheck])) instead of the image's C(HEALTHCHECK). An image with neither is
        refused: Swarm could not gate the rollout."
    type: list
    elements: str
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
    description:
      - Seconds between health probes (also the probe period of the O(verify_window)).
      - A new container's first probes come sooner (0.1 s, then doubling up to this) so a quick start is seen at once.
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
        O(health_interval). O(watch_failures) failed probes in a row switch back to the previous colour
        (outcome C(rolled_back)) and fail the task. V(0) skips the window.
    type: float
    default: 5
  watch_failures:
    description:
      - Consecutive failed probes (the container's health or the proxy's answer) in the O(verify_window)
        that switch back. V(1) switches back on the first; the default tolerates a probe or two lost to a
        saturated server, as Docker's and Kubernetes' health checks do. A streak still open when the window
        ends is followed until it passes or reaches this count.
    type: int
    default: 3
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
    description:
      - Directory of the ledger (and of the lock without O(lock_file)). Defaults to C(/var/lib/montaiguillon/{name}).
    type: path
  lock_file:
    description:
      - The server's change lock, shared with restores and backup pruning (the roles point all of them at one
        file), so a deploy never migrates a database a restore is loading. Defaults to C({state_dir}/deploy.lock).
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
      - Seconds to wait for a deploy, rollback or restore that holds the lock and is still running (for example
        a deploy whose controller was killed, the module goes on on the server) before failing. 0 fails at once.
    type: float
    default: 0
  break_lock:
    description:
      - Take the lock even if another deploy, rollback or restore appears to hold it. Only when that one is dead.
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
settled:
  description:
    - In check mode, true when the answer is no change and a real run now would change nothing either
      (the image is pinned by digest or O(pull=false), and no other run holds the lock).
    - C(deploy.yml) skips the real run on prod when its plan is settled.
  returned: state is present and check mode
  type: bool
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
  description: The lock holder (who, when, action, what, pid or lease), or null when nobody holds it.
  returned: state is status
  type: dict
releases:
  description: The last O(history) ledger entries, oldest first.
  returned: state is status
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.common.docker_engine import DockerEngine, DockerError, get_client
from ansible.module_utils.montaiguillon.deploy.confinement import Confinement, confinement_spec
from ansible.module_utils.montaiguillon.deploy.plan import ReleaseError, validate_params
from ansible.module_utils.montaiguillon.deploy.release import BlueGreenRelease
from ansible.module_utils.montaiguillon.deploy.secret_files import name_errors
from ansible.module_utils.montaiguillon.deploy.story import ReleaseFailure
from ansible.module_utils.montaiguillon.deploy.swarm_engine import SwarmEngine
from ansible.module_utils.montaiguillon.deploy.swarm_release import SwarmRelease
from ansible.module_utils.montaiguillon.deploy.swarm_spec import swarm_errors
from ansible.module_utils.montaiguillon.deploy.volumes import volume_errors


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
        "watch_failures": {"type": "int", "default": 3},
        "keep_releases": {"type": "int", "default": 5},
        "keep_failed": {"type": "bool", "default": False},
        "state_dir": {"type": "path"},
        "requested_by": {"type": "str"},
        "revision": {"type": "str"},
        "pipeline_run": {"type": "str"},
        "snapshot": {"type": "dict"},
        "release": {"type": "str"},
        "break_lock": {"type": "bool", "default": False},
        "lock_file": {"type": "path"},
        "lock_wait": {"type": "float", "default": 0},
        "history": {"type": "int", "default": 10},
        "docker_host": {"type": "str"},
        "confinement": confinement_spec(),
        "secret_files": {"type": "dict", "default": {}, "no_log": True},
        "files_owner": {"type": "str"},
        "migrate_secret_env": {"type": "dict", "default": {}, "no_log": True},
        "volumes": {"type": "dict", "default": {}},
        "topology": {"type": "str", "default": "single", "choices": ["single", "swarm"]},
        "replicas": {"type": "int", "default": 2},
        "healthcheck_command": {"type": "list", "elements": "str"},
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
        + swarm_errors(module.params)
    )
    if errors:
        module.fail_json(msg="; ".join(errors))
    try:
        client = get_client(module.params.get("docker_host"))
    except DockerError as exc:
        module.fail_json(msg=str(exc))
    engine, options = DockerEngine(client), {"check_mode": module.check_mode, "warn": module.warn}
    if module.params["topology"] == "swarm":
        manager = SwarmRelease(module.params, engine, SwarmEngine(client), **options)
    else:
        manager = BlueGreenRelease(module.params, engine, **options)
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
