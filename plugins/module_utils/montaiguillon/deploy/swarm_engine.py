"""The Swarm manager's side of a release: services, their tasks and Docker secrets, through the Docker SDK."""

from ansible.module_utils.montaiguillon.common.docker_engine import DockerError, DockerException, NotFound, _explain
from ansible.module_utils.montaiguillon.deploy.plan import LABEL_APP, LABEL_RELEASE

try:
    from docker import types
except ImportError:  # the module reports the missing SDK through get_client
    types = None


TMPFS_BYTES = 64 * 1024**2  # as the single topology's scratch tmpfs (confinement.TMPFS_OPTIONS)


class SwarmEngine:
    """What a release asks of a swarm manager; every Docker failure is a DockerError naming the call."""

    def __init__(self, client):
        self.client = client

    def check_manager(self):
        """Fail unless this engine is a manager of an active swarm (the module runs on the first manager)."""
        try:
            swarm = self.client.info().get("Swarm") or {}
        except DockerException as exc:
            raise DockerError(f"cannot read the engine's swarm state: {_explain(exc)}") from exc
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise DockerError(
                "site_topology is swarm but this Docker engine is not a swarm manager "
                f"(swarm state {swarm.get('LocalNodeState') or 'inactive'}): run the swarm role first, and the "
                "release on a manager"
            )

    def service(self, name):
        """The service's inspect dict, or None."""
        try:
            return self.client.services.get(name).attrs
        except NotFound:
            return None
        except DockerException as exc:
            raise DockerError(f"cannot inspect service {name}: {_explain(exc)}") from exc

    def tasks(self, name):
        try:
            return self.client.services.get(name).tasks()
        except NotFound:
            return []
        except DockerException as exc:
            raise DockerError(f"cannot list the tasks of service {name}: {_explain(exc)}") from exc

    def nodes(self):
        """Node id -> hostname, for telling where tasks run."""
        try:
            return {node.id: node.attrs["Description"]["Hostname"] for node in self.client.nodes.list()}
        except DockerException as exc:
            raise DockerError(f"cannot list the swarm's nodes: {_explain(exc)}") from exc

    def apply(self, name, spec):
        """Create the service, or roll the existing one out to ``spec`` (Swarm's update_config).

        The low-level API: the Debian 12 SDK (5.0.3) models cannot pass a rollback_config.
        """
        kwargs = self._service_kwargs(name, spec)
        try:
            current = self.client.api.inspect_service(name)
        except NotFound:
            current = None
        except DockerException as exc:
            raise DockerError(f"cannot inspect service {name}: {_explain(exc)}") from exc
        try:
            if current is None:
                self.client.api.create_service(**kwargs)
            else:
                self.client.api.update_service(current["ID"], current["Version"]["Index"], **kwargs)
        except DockerException as exc:
            verb = "create" if current is None else "update"
            raise DockerError(f"cannot {verb} service {name}: {_explain(exc)}") from exc

    def remove_service(self, name):
        try:
            self.client.api.remove_service(name)
        except NotFound:
            return
        except DockerException as exc:
            raise DockerError(f"cannot remove service {name}: {_explain(exc)}") from exc

    @staticmethod
    def _service_kwargs(name, spec):
        policy, confinement = spec["policy"], spec["confinement"]
        container = types.ContainerSpec(
            spec["image"],
            env=[f"{key}={value}" for key, value in sorted(spec["env"].items())],
            labels=spec["labels"],
            mounts=[
                types.Mount(path, None, type="tmpfs", tmpfs_size=TMPFS_BYTES, tmpfs_mode=0o1777)
                for path in confinement.get("tmpfs", {})
            ],
            stop_grace_period=spec["stop_grace_period"],
            secrets=[
                types.SecretReference(r["id"], r["name"], filename=r["file"], uid=r["uid"], gid=r["gid"], mode=0o400)
                for r in spec["secrets"]
            ],
            read_only=confinement.get("read_only", False),
            healthcheck=types.Healthcheck(**spec["healthcheck"]),
            cap_add=confinement.get("cap_add"),
            cap_drop=confinement.get("cap_drop"),
        )
        template = types.TaskTemplate(
            container,
            resources=types.Resources(mem_limit=spec["memory"]) if spec.get("memory") else None,
            restart_policy=types.RestartPolicy(condition="any", delay=1_000_000_000),
            networks=[{"Target": network} for network in spec["networks"]],
        )
        return {
            "task_template": template,
            "name": name,
            "labels": spec["labels"],
            "mode": types.ServiceMode("replicated", replicas=spec["replicas"]),
            "update_config": types.UpdateConfig(**policy["update"]),
            "rollback_config": types.RollbackConfig(**policy["rollback"]),
            "endpoint_spec": types.EndpointSpec(mode="dnsrr"),
        }

    # --- secrets ----------------------------------------------------------------------

    def ensure_secret(self, name, value, app, release):
        """The id of Docker secret ``name`` holding ``value`` (created; an existing one is reused)."""
        try:
            return self.client.secrets.get(name).id
        except NotFound:
            pass
        except DockerException as exc:
            raise DockerError(f"cannot inspect secret {name}: {_explain(exc)}") from exc
        try:
            secret = self.client.secrets.create(
                name=name, data=str(value).encode(), labels={LABEL_APP: app, LABEL_RELEASE: release}
            )
        except DockerException as exc:
            raise DockerError(f"cannot create secret {name}: {_explain(exc)}") from exc
        return secret.id

    def remove_unused_secrets(self, app, in_use):
        """Remove the app's secrets no service refers to any more; the names removed."""
        try:
            secrets = self.client.secrets.list(filters={"label": f"{LABEL_APP}={app}"})
        except DockerException as exc:
            raise DockerError(f"cannot list the secrets of {app}: {_explain(exc)}") from exc
        removed = []
        for secret in secrets:
            if secret.id in in_use:
                continue
            try:
                secret.remove()
            except DockerException:  # still referenced (a rollback in flight): kept for the next run
                continue
            removed.append(secret.name)
        return sorted(removed)
