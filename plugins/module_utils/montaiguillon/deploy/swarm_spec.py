"""A release as a Docker Swarm service (site_topology: swarm), kept free of Docker.

The site runs as one replicated service named after the app, reached by DNS
(``endpoint_mode: dnsrr``: these machines' kernels have no IPVS, so no VIP):
nginx resolves the service's name to its running tasks. A release is rolled out
by Swarm itself, ``order: start-first`` one task at a time, each new task
counted only once the image's health check passes, and rolled back by Swarm
when a task fails during the rollout or its monitor window
(``failure_action: rollback``). Secrets are Docker secrets, one per release
(Docker secrets cannot change), mounted where the single topology's files are
(``/run/secrets/NAME``, ``NAME_FILE`` in the environment).

Everything here works on plain data (the service's inspect dict, the image's
inspect dict, the module's parameters) and is unit tested without a swarm.
"""

from ansible.module_utils.montaiguillon.deploy.fingerprint import LABEL_CONFIG
from ansible.module_utils.montaiguillon.deploy.plan import (
    LABEL_APP,
    LABEL_IMAGE,
    LABEL_IMAGE_ID,
    LABEL_RELEASE,
    LABEL_REVISION,
    LABEL_VERSION,
    ReleaseError,
)

SECOND = 1_000_000_000  # Swarm counts durations in nanoseconds
UPDATE_COMPLETED = "completed"
ROLLBACK_COMPLETED = "rollback_completed"
UPDATE_STOPPED = ("paused", "rollback_paused")
UPDATE_OVER = (UPDATE_COMPLETED, ROLLBACK_COMPLETED, *UPDATE_STOPPED)
SECRET_NAME_MAX = 64


def digest_reference(ref, repo_digests):
    """``repo@sha256:...`` of ``ref``'s repository among the image's RepoDigests, or None.

    Every node pulls the service's image itself: by digest they all run the bits
    the manager pulled and tested, whatever the tag points to by then.
    """
    repository = ref.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: -(len(last) - last.index(":"))]
    for digest in repo_digests or []:
        if digest.split("@", 1)[0] == repository:
            return digest
    return None


def secret_name(app, release, name):
    """The Docker secret holding secret file ``name`` for ``release`` (never reused: secrets are immutable)."""
    secret = f"{app}-{release}-{name}"
    if len(secret) > SECRET_NAME_MAX:
        raise ReleaseError(
            f"secret_files: {name!r} makes the Docker secret name {secret!r} longer than {SECRET_NAME_MAX} "
            "characters; use a shorter name (or a shorter app name)"
        )
    return secret


def healthcheck(image_attrs, command, interval, start_period):
    """The service's health check: ``command`` or the image's HEALTHCHECK test, polled every ``interval`` s.

    Swarm counts a new task as started only once it is healthy: that is what gates
    the rollout. An image with no health check cannot be gated, so it is refused.
    """
    declared = ((image_attrs or {}).get("Config") or {}).get("Healthcheck") or {}
    if command:
        test = ["CMD", *command]
    elif declared.get("Test") and declared["Test"][0] != "NONE":
        test = list(declared["Test"])
    else:
        raise ReleaseError(
            "the image declares no HEALTHCHECK, and in site_topology swarm the rollout is gated on it: add a "
            "HEALTHCHECK to the image (for example one requesting the health path) or set healthcheck_command"
        )
    return {
        "test": test,
        "interval": int(interval * SECOND),
        "timeout": int(max(declared.get("Timeout", 0) / SECOND, 5) * SECOND),
        "retries": 3,
        "start_period": int(start_period * SECOND),
    }


def service_labels(name, release, image_ref, image_id, revision, version, config):
    return {
        LABEL_APP: name,
        LABEL_RELEASE: release,
        LABEL_IMAGE: image_ref,
        LABEL_IMAGE_ID: image_id,
        LABEL_REVISION: revision or "",
        LABEL_VERSION: version or "",
        LABEL_CONFIG: config,
    }


def update_policy(monitor):
    """Rollout and rollback: one task at a time, the new one up before the old one stops."""
    return {
        "update": {
            "parallelism": 1,
            "delay": 0,
            "order": "start-first",
            "failure_action": "rollback",
            "monitor": int(monitor * SECOND),
            "max_failure_ratio": 0,
        },
        "rollback": {
            "parallelism": 1,
            "delay": 0,
            "order": "start-first",
            "failure_action": "pause",
            "monitor": int(monitor * SECOND),
            "max_failure_ratio": 0,
        },
    }


def update_state(attrs):
    """(state, message) of the service's last rollout; (None, "") for a service never updated."""
    status = (attrs or {}).get("UpdateStatus") or {}
    return status.get("State"), status.get("Message", "")


def update_started(attrs):
    return ((attrs or {}).get("UpdateStatus") or {}).get("StartedAt")


def spec_labels(attrs):
    return (((attrs or {}).get("Spec") or {}).get("Labels")) or {}


def spec_replicas(attrs):
    return ((((attrs or {}).get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas")


def running_nodes(tasks):
    """Node ids of the tasks Swarm wants running that are running (healthy, when the image checks health)."""
    return sorted(
        task.get("NodeID", "?")
        for task in tasks or []
        if task.get("DesiredState") == "running" and (task.get("Status") or {}).get("State") == "running"
    )


def decide(attrs, image_id, config, replicas, running):
    """(changed, reason) of a deploy of ``image_id`` with ``config`` on ``replicas`` tasks."""
    if attrs is None:
        return True, "the service does not exist yet: it is created"
    labels = spec_labels(attrs)
    state, message = update_state(attrs)
    if state in (ROLLBACK_COMPLETED, *UPDATE_STOPPED):
        return True, f"the service's last rollout ended {state} ({message or 'no message'}); it is rolled out again"
    if labels.get(LABEL_IMAGE_ID) != image_id:
        return True, f"the service runs image {labels.get(LABEL_IMAGE_ID) or '?'}, not {image_id}"
    if labels.get(LABEL_CONFIG) != config:
        return True, "the configuration changed (environment, secrets, port, networks, limits or health check)"
    if spec_replicas(attrs) != replicas:
        return True, f"the service has {spec_replicas(attrs)} replicas, {replicas} are asked for"
    if len(running) < replicas:
        return True, f"only {len(running)} of {replicas} tasks run; the release is rolled out again"
    return False, f"release {labels.get(LABEL_RELEASE)} already runs on {len(running)} tasks with this configuration"


def swarm_errors(params):
    """What site_topology swarm refuses in the module's parameters (checked before anything changes)."""
    if params.get("topology") != "swarm":
        return []
    errors = []
    replicas = params.get("replicas")
    if replicas is None or replicas < 1:
        errors.append(f"replicas must be at least 1, got {replicas}")
    if params.get("secret_env"):
        errors.append(
            f"secret_env ({', '.join(sorted(params['secret_env']))}) cannot be used with topology swarm: a "
            "service's environment is readable by anyone who can inspect it; pass secrets as secret_files "
            "(Docker secrets, NAME_FILE in the environment)"
        )
    if params.get("volumes"):
        errors.append(
            "volumes cannot be used with topology swarm: a named volume exists on one node, and the tasks "
            "run on several; keep state in the database"
        )
    return errors
