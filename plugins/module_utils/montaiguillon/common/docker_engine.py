"""Docker helpers shared by this collection's modules (deploy now, backup later).

Written for the Docker SDK for Python as Debian 12 ships it (python3-docker
5.0.3): only APIs that exist there are used. Every SDK or transport error is
turned into ``DockerError`` with a message a person can act on, so a module
catches one exception type and calls ``fail_json`` once.

- ``get_client(docker_host)``: a connected client, or a clear failure;
- ``container_by_name``, ``exec_in_container``: small building blocks;
- ``DockerEngine``: the operations a release needs (inspect, pull, one-off
  containers, create-and-start on several networks, logs, remove).

Pulls from a private registry use the credentials of the user the module runs
as: the SDK reads ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
(root's, written by the docker role's ``docker_registry_auths``). A refused
pull says which file was read and whether it had credentials for the registry.
"""

import contextlib
import json
import os
import re
import traceback

try:
    import docker
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound

    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the server
    docker = None
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

    class DockerException(Exception):
        pass

    class APIError(DockerException):
        pass

    class NotFound(APIError):
        pass

    class ImageNotFound(NotFound):
        pass


DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
SDK_MISSING = (
    "the Docker SDK for Python is not installed for the interpreter running this module "
    "(on Debian: apt-get install python3-docker)"
)


class DockerError(Exception):
    """A Docker operation failed; the message says which and why."""


def _explain(exc):
    """Short text for an SDK exception (APIError carries the daemon's explanation)."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return explanation.decode() if isinstance(explanation, bytes) else str(explanation)
    return str(exc) or exc.__class__.__name__


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return str(data)


# What registries and the daemon answer when a pull lacks or has wrong credentials.
AUTH_REFUSED = re.compile(r"no basic auth credentials|unauthorized|authentication required|denied|\b401\b", re.I)


def registry_of(ref):
    """The registry an image reference pulls from (docker.io when it names none)."""
    name = ref.split("@", 1)[0]
    first, slash, _rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def docker_config_path(environ=None):
    """The client configuration the SDK reads for this process's user."""
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_CONFIG"):
        return os.path.join(environ["DOCKER_CONFIG"], "config.json")
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".docker", "config.json")


def credentials_hint(ref, environ=None):
    """Why a registry may have refused a pull of ``ref``: which credentials this user has for it."""
    registry = registry_of(ref)
    path = docker_config_path(environ)
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        config = None
    except (OSError, ValueError) as exc:
        return f"cannot read {path} for the credentials of {registry}: {exc}"
    if config is None:
        return (
            f"no Docker credentials for this user ({path} does not exist): "
            f"log the server in to {registry} with docker_registry_auths (roles/docker)"
        )
    names = {re.sub(r"^https?://", "", key).split("/", 1)[0] for key in (config.get("auths") or {})}
    if registry in names or registry in (config.get("credHelpers") or {}):
        return (
            f"{path} has credentials for {registry} and the registry refused them: "
            "wrong password or token, or an account without read access to the image"
        )
    return (
        f"{path} has no credentials for {registry}: log the server in to it with docker_registry_auths (roles/docker)"
    )


def docker_host_url(docker_host=None):
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def get_client(docker_host=None, timeout=60):
    """A DockerClient that answered a ping, or DockerError saying where it looked."""
    if not HAS_DOCKER:
        raise DockerError(SDK_MISSING)
    url = docker_host_url(docker_host)
    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=timeout)
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests and OS errors here
        raise DockerError(f"cannot reach Docker at {url}: {_explain(exc)}") from exc
    return client


def container_by_name(client, name):
    """The container called ``name``, or None."""
    try:
        return client.containers.get(name)
    except NotFound:
        return None
    except DockerException as exc:
        raise DockerError(f"cannot inspect container {name}: {_explain(exc)}") from exc


def exec_in_container(container, command, user=None, environment=None):
    """Run ``command`` (a list) in a running container: (exit code, combined output text)."""
    name = getattr(container, "name", "?")
    try:
        result = container.exec_run(command, stdout=True, stderr=True, user=user or "", environment=environment)
    except DockerException as exc:
        raise DockerError(f"cannot run {' '.join(command)} in container {name}: {_explain(exc)}") from exc
    exit_code, output = result
    return exit_code, _text(output)


class DockerEngine:
    """The Docker operations a blue/green release needs, by container name."""

    def __init__(self, client):
        self.client = client

    # --- containers -------------------------------------------------------

    def inspect_container(self, name):
        """``docker inspect`` of a container as a dict, or None when it does not exist."""
        container = container_by_name(self.client, name)
        return container.attrs if container is not None else None

    def _get(self, name):
        container = container_by_name(self.client, name)
        if container is None:
            raise DockerError(f"container {name} does not exist")
        return container

    def container_ip(self, name, network):
        """IP address of a container on one network."""
        attrs = self.inspect_container(name)
        if attrs is None:
            raise DockerError(f"container {name} does not exist")
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        address = (networks.get(network) or {}).get("IPAddress")
        if not address:
            raise DockerError(f"container {name} has no IP address on network {network}")
        return address

    def exec(self, name, command):
        """(exit code, output) of ``command`` run in the running container ``name``."""
        return exec_in_container(self._get(name), command)

    def logs(self, name, tail=20):
        """The last ``tail`` lines of a container's output ('' if it is gone)."""
        container = container_by_name(self.client, name)
        if container is None:
            return ""
        try:
            return _text(container.logs(stdout=True, stderr=True, tail=tail))
        except DockerException as exc:
            return f"(cannot read the logs of {name}: {_explain(exc)})"

    def remove_container(self, name, stop_timeout=10):
        """Stop (SIGTERM, then SIGKILL after ``stop_timeout``) and remove. False if absent."""
        container = container_by_name(self.client, name)
        if container is None:
            return False
        try:
            if (container.attrs.get("State") or {}).get("Running"):
                container.stop(timeout=stop_timeout)
            container.remove(force=True)
        except NotFound:
            return False
        except DockerException as exc:
            raise DockerError(f"cannot remove container {name}: {_explain(exc)}") from exc
        return True

    def retire_container(self, name, new_name):
        """Move ``name`` out of the way at once: restart policy off (a dockerd restart must not revive it),
        renamed ``new_name``, sent its stop signal without waiting for it to exit. False if absent."""
        container = container_by_name(self.client, name)
        if container is None:
            return False
        try:
            container.update(restart_policy={"Name": "no"})
            container.rename(new_name)
            if (container.attrs.get("State") or {}).get("Running"):
                signal = (container.attrs.get("Config") or {}).get("StopSignal") or "SIGTERM"
                container.kill(signal=signal)
        except NotFound:
            return False
        except APIError as exc:
            if "is not running" not in _explain(exc):  # it exited between the inspect and the signal
                raise DockerError(f"cannot move container {name} aside: {_explain(exc)}") from exc
        except DockerException as exc:
            raise DockerError(f"cannot move container {name} aside: {_explain(exc)}") from exc
        return True

    def container_names(self, label):
        """Names of the containers (running or not) carrying ``label`` ("key=value")."""
        try:
            return [container.name for container in self.client.containers.list(all=True, filters={"label": label})]
        except DockerException as exc:
            raise DockerError(f"cannot list the containers labelled {label}: {_explain(exc)}") from exc

    def _create(self, name, image, command, environment, networks, labels, restart_policy=None, options=None):
        """Create a container attached to every network in ``networks`` (not started).

        ``options``: further ``containers.create`` keywords (capabilities, limits).
        """
        kwargs = dict(options or {})
        kwargs.update(
            {
                "name": name,
                "environment": environment or {},
                "labels": labels or {},
                "network": networks[0],
                "detach": True,
            }
        )
        if command:
            kwargs["command"] = command
        if restart_policy:
            kwargs["restart_policy"] = {"Name": restart_policy}
        try:
            container = self.client.containers.create(image, **kwargs)
        except DockerException as exc:
            raise DockerError(f"cannot create container {name} from {image}: {_explain(exc)}") from exc
        try:
            for network in networks[1:]:
                self.client.networks.get(network).connect(container)
        except DockerException as exc:
            self._force_remove(container)
            raise DockerError(f"cannot connect container {name} to network {network}: {_explain(exc)}") from exc
        return container

    def _force_remove(self, container):
        with contextlib.suppress(DockerException):
            container.remove(force=True)

    def start_container(
        self, name, image, environment, networks, labels, restart_policy="unless-stopped", options=None
    ):
        """Create and start a long-running container; returns its inspect dict."""
        container = self._create(name, image, None, environment, networks, labels, restart_policy, options)
        try:
            container.start()
            container.reload()
        except DockerException as exc:
            self._force_remove(container)
            raise DockerError(f"cannot start container {name}: {_explain(exc)}") from exc
        return container.attrs

    def run_oneoff(self, name, image, command, environment, networks, labels=None, timeout=600, options=None):
        """Run ``command`` in a throw-away container; (exit code, output). Always removed."""
        stale = container_by_name(self.client, name)
        if stale is not None:
            self._force_remove(stale)
        container = self._create(name, image, command, environment, networks, labels, options=options)
        try:
            try:
                container.start()
            except DockerException as exc:
                raise DockerError(f"cannot start one-off container {name}: {_explain(exc)}") from exc
            try:
                status = container.wait(timeout=timeout)
            except Exception as exc:  # requests' ReadTimeout / ConnectionError
                output = self._logs_of(container)
                raise DockerError(
                    f"{' '.join(command)} did not finish within {timeout} s ({_explain(exc)}); last output:\n{output}"
                ) from exc
            exit_code = status.get("StatusCode") if isinstance(status, dict) else status
            return exit_code, self._logs_of(container)
        finally:
            self._force_remove(container)

    def _logs_of(self, container):
        try:
            return _text(container.logs(stdout=True, stderr=True))
        except DockerException as exc:
            return f"(cannot read the logs: {_explain(exc)})"

    # --- images -------------------------------------------------------------

    def local_image(self, ref):
        """Inspect dict of a local image (by reference or id), or None."""
        try:
            return self.client.images.get(ref).attrs
        except (ImageNotFound, NotFound):
            return None
        except DockerException as exc:
            raise DockerError(f"cannot inspect image {ref}: {_explain(exc)}") from exc

    def pull(self, ref):
        """Pull ``ref`` (tag or digest reference); its inspect dict, or DockerError."""
        try:
            for event in self.client.api.pull(ref, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise DockerError(event.get("error"))
        except DockerError as exc:
            raise DockerError(self._pull_failure(ref, str(exc))) from exc
        except Exception as exc:  # APIError, requests errors
            raise DockerError(self._pull_failure(ref, _explain(exc))) from exc
        attrs = self.local_image(ref)
        if attrs is None:
            raise DockerError(f"pull of {ref} reported success but the image is not on the server")
        return attrs

    @staticmethod
    def _pull_failure(ref, reason):
        message = f"pull of {ref} failed: {reason}"
        if AUTH_REFUSED.search(reason):
            message += f" ({credentials_hint(ref)})"
        return message

    def remove_image(self, image_id):
        """Remove an image and all its tags; (removed, reason). In use or gone is not an error.

        Each tag and digest reference is removed first (never forced), so an
        image tagged twice goes too, and one a container still uses stays.
        """
        attrs = self.local_image(image_id)
        if attrs is None:
            return False, "already gone"
        refs = [ref for ref in (attrs.get("RepoTags") or []) if ref and ref != "<none>:<none>"]
        refs += [ref for ref in (attrs.get("RepoDigests") or []) if ref and not ref.startswith("<none>@")]
        try:
            for ref in refs:
                try:
                    self.client.images.remove(ref)
                except (ImageNotFound, NotFound):
                    continue
            if self.local_image(image_id) is not None:
                self.client.images.remove(image_id)
        except (ImageNotFound, NotFound):
            return True, "removed"
        except APIError as exc:
            status = getattr(exc, "status_code", None)
            if status == 409:
                return False, f"in use: {_explain(exc)}"
            raise DockerError(f"cannot remove image {image_id}: {_explain(exc)}") from exc
        except DockerException as exc:
            raise DockerError(f"cannot remove image {image_id}: {_explain(exc)}") from exc
        return True, "removed"
