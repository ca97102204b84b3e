"""Docker helpers against a mocked SDK client: clear errors, networks, cleanup, pulls, pruning."""

import json
import re
from unittest import mock

import pytest
import requests
from ansible.module_utils.montaiguillon.common import docker_engine as docker_common
from ansible.module_utils.montaiguillon.common.docker_engine import (
    DockerEngine,
    DockerError,
    container_by_name,
    exec_in_container,
    get_client,
)
from docker.errors import APIError, DockerException, ImageNotFound, NotFound


def api_error(message, status):
    response = mock.Mock(status_code=status, reason="x")
    return APIError(message, response=response, explanation=message)


@pytest.mark.parametrize(
    ("failure", "where"),
    [
        ("client", DockerException("Error while fetching server API version: connection refused")),
        ("ping", requests.exceptions.ConnectionError("[Errno 2] No such file or directory")),
    ],
)
def test_get_client_says_where_it_looked(monkeypatch, failure, where):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    client = mock.Mock()
    if failure == "client":
        factory = mock.Mock(side_effect=where)
    else:
        client.ping.side_effect = where
        factory = mock.Mock(return_value=client)
    monkeypatch.setattr(docker_common.docker, "DockerClient", factory)
    with pytest.raises(DockerError, match=r"cannot reach Docker at unix:///var/run/docker.sock: "):
        get_client()


def test_get_client_uses_docker_host(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    factory = mock.Mock()
    monkeypatch.setattr(docker_common.docker, "DockerClient", factory)
    assert get_client() is factory.return_value
    factory.assert_called_once_with(base_url="tcp://127.0.0.1:2375", version="auto", timeout=60)
    get_client("unix:///run/other.sock")
    assert factory.call_args.kwargs["base_url"] == "unix:///run/other.sock"


def test_get_client_without_the_sdk(monkeypatch):
    monkeypatch.setattr(docker_common, "HAS_DOCKER", False)
    with pytest.raises(DockerError, match="python3-docker"):
        get_client()


def test_container_by_name():
    client = mock.Mock()
    client.containers.get.side_effect = NotFound("no such container")
    assert container_by_name(client, "app-blue") is None
    client.containers.get.side_effect = api_error("daemon is sad", 500)
    with pytest.raises(DockerError, match="cannot inspect container app-blue: daemon is sad"):
        container_by_name(client, "app-blue")


def test_exec_in_container_returns_code_and_text():
    container = mock.Mock()
    container.name = "proxy"
    container.exec_run.return_value = (1, b"nginx: [emerg] host not found in upstream\n")
    code, output = exec_in_container(container, ["nginx", "-t"])
    assert code == 1 and "host not found" in output
    container.exec_run.side_effect = api_error("container proxy is not running", 409)
    with pytest.raises(DockerError, match="cannot run nginx -t in container proxy: container proxy is not running"):
        exec_in_container(container, ["nginx", "-t"])


def test_start_container_joins_every_network():
    client = mock.Mock()
    container = client.containers.create.return_value
    container.attrs = {"Id": "c1"}
    engine = DockerEngine(client)
    attrs = engine.start_container("app-blue", "sha256:a", {"A": "1"}, ["front", "back"], {"l": "v"})
    assert attrs == {"Id": "c1"}
    args, kwargs = client.containers.create.call_args
    assert args == ("sha256:a",)
    assert kwargs["network"] == "front" and kwargs["name"] == "app-blue"
    assert kwargs["restart_policy"] == {"Name": "unless-stopped"}
    assert kwargs["environment"] == {"A": "1"} and kwargs["labels"] == {"l": "v"}
    client.networks.get.assert_called_once_with("back")
    client.networks.get.return_value.connect.assert_called_once_with(container)
    container.start.assert_called_once_with()


def test_start_failure_removes_the_container():
    client = mock.Mock()
    container = client.containers.create.return_value
    container.start.side_effect = api_error("port is already allocated", 500)
    with pytest.raises(DockerError, match="cannot start container app-blue: port is already allocated"):
        DockerEngine(client).start_container("app-blue", "img", {}, ["front"], {})
    container.remove.assert_called_once_with(force=True)


def test_missing_network_is_a_clear_error_and_cleans_up():
    client = mock.Mock()
    client.networks.get.side_effect = NotFound("network back not found")
    with pytest.raises(DockerError, match="cannot connect container app-blue to network back"):
        DockerEngine(client).start_container("app-blue", "img", {}, ["front", "back"], {})
    client.containers.create.return_value.remove.assert_called_once_with(force=True)


def test_run_oneoff_returns_exit_code_and_output_and_removes_the_container():
    client = mock.Mock()
    client.containers.get.side_effect = NotFound("none")
    container = client.containers.create.return_value
    container.wait.return_value = {"StatusCode": 3}
    container.logs.return_value = b"applying 0004\nerror: column exists\n"
    code, output = DockerEngine(client).run_oneoff(
        "app-migrate", "sha256:b", ["migrate"], {"DB": "x"}, ["front", "back"], timeout=30
    )
    assert code == 3 and "column exists" in output
    assert client.containers.create.call_args.kwargs["command"] == ["migrate"]
    client.networks.get.assert_called_once_with("back")
    container.remove.assert_called_once_with(force=True)


def test_run_oneoff_timeout_still_removes_the_container():
    client = mock.Mock()
    client.containers.get.side_effect = NotFound("none")
    container = client.containers.create.return_value
    container.wait.side_effect = requests.exceptions.ReadTimeout("read timed out")
    container.logs.return_value = b"still migrating\n"
    with pytest.raises(DockerError, match=r"(?s)migrate did not finish within 5 s .*still migrating"):
        DockerEngine(client).run_oneoff("app-migrate", "img", ["migrate"], {}, ["front"], timeout=5)
    container.remove.assert_called_once_with(force=True)


def test_run_oneoff_removes_a_leftover_first():
    client = mock.Mock()
    leftover = mock.Mock()
    client.containers.get.return_value = leftover
    client.containers.create.return_value.wait.return_value = {"StatusCode": 0}
    client.containers.create.return_value.logs.return_value = b""
    DockerEngine(client).run_oneoff("app-migrate", "img", ["migrate"], {}, ["front"])
    leftover.remove.assert_called_once_with(force=True)


def test_pull_error_event_is_a_failure():
    client = mock.Mock()
    client.api.pull.return_value = iter([{"status": "Pulling"}, {"error": "manifest unknown"}])
    with pytest.raises(DockerError, match="pull of site:9 failed: manifest unknown"):
        DockerEngine(client).pull("site:9")


def test_pull_transport_error_is_a_failure():
    client = mock.Mock()
    client.api.pull.side_effect = api_error("Get https://ghcr.io/v2/: dial tcp: lookup ghcr.io: no such host", 500)
    with pytest.raises(DockerError, match=r"pull of ghcr\.io/x/site:1 failed: .*no such host"):
        DockerEngine(client).pull("ghcr.io/x/site:1")


def test_pull_success_returns_the_local_image():
    client = mock.Mock()
    client.api.pull.return_value = iter([{"status": "Downloaded newer image"}])
    client.images.get.return_value.attrs = {"Id": "sha256:abc"}
    assert DockerEngine(client).pull("site@sha256:def")["Id"] == "sha256:abc"
    client.api.pull.assert_called_once_with("site@sha256:def", stream=True, decode=True)


def test_local_image_missing_is_none():
    client = mock.Mock()
    client.images.get.side_effect = ImageNotFound("no such image")
    assert DockerEngine(client).local_image("site:1") is None


def test_remove_image_untags_then_removes():
    client = mock.Mock()
    image = mock.Mock(attrs={"Id": "sha256:a", "RepoTags": ["site:1", "site:latest"], "RepoDigests": ["site@sha256:d"]})
    client.images.get.side_effect = [image, ImageNotFound("gone")]
    assert DockerEngine(client).remove_image("sha256:a") == (True, "removed")
    assert [c.args[0] for c in client.images.remove.call_args_list] == ["site:1", "site:latest", "site@sha256:d"]


def test_remove_image_in_use_is_not_an_error():
    client = mock.Mock()
    client.images.get.return_value = mock.Mock(attrs={"Id": "sha256:a", "RepoTags": [], "RepoDigests": []})
    client.images.remove.side_effect = api_error("conflict: image is being used by running container", 409)
    removed, reason = DockerEngine(client).remove_image("sha256:a")
    assert removed is False and reason.startswith("in use")


def test_remove_image_gone_is_not_an_error():
    client = mock.Mock()
    client.images.get.side_effect = ImageNotFound("no such image")
    assert DockerEngine(client).remove_image("sha256:a") == (False, "already gone")


def test_remove_image_other_errors_are_reported():
    client = mock.Mock()
    client.images.get.return_value = mock.Mock(attrs={"Id": "sha256:a", "RepoTags": [], "RepoDigests": []})
    client.images.remove.side_effect = api_error("driver failed", 500)
    with pytest.raises(DockerError, match="cannot remove image sha256:a: driver failed"):
        DockerEngine(client).remove_image("sha256:a")


def test_remove_container_stops_running_ones_first():
    client = mock.Mock()
    container = client.containers.get.return_value
    container.attrs = {"State": {"Running": True}}
    assert DockerEngine(client).remove_container("app-green", stop_timeout=7) is True
    container.stop.assert_called_once_with(timeout=7)
    container.remove.assert_called_once_with(force=True)
    client.containers.get.side_effect = NotFound("none")
    assert DockerEngine(client).remove_container("app-green") is False


def test_retire_container_turns_restart_off_renames_and_signals_without_waiting():
    client = mock.Mock()
    container = client.containers.get.return_value
    container.attrs = {"State": {"Running": True}, "Config": {"StopSignal": "SIGQUIT"}}
    assert DockerEngine(client).retire_container("app-blue", "app-blue-retired-abc") is True
    assert container.method_calls == [
        mock.call.update(restart_policy={"Name": "no"}),  # before the rename: a dockerd restart must not revive it
        mock.call.rename("app-blue-retired-abc"),
        mock.call.kill(signal="SIGQUIT"),  # the image's own stop signal; SIGTERM when it names none
    ]
    container.stop.assert_not_called()


def test_retire_container_that_exits_meanwhile_or_is_gone_is_not_an_error():
    client = mock.Mock()
    container = client.containers.get.return_value
    container.attrs = {"State": {"Running": True}, "Config": {}}
    container.kill.side_effect = api_error("Container abc is not running", 409)
    assert DockerEngine(client).retire_container("app-blue", "app-blue-retired-abc") is True
    container.rename.side_effect = api_error("Conflict. The container name is already in use", 409)
    with pytest.raises(DockerError, match="cannot move container app-blue aside: Conflict"):
        DockerEngine(client).retire_container("app-blue", "app-blue-retired-abc")
    client.containers.get.side_effect = NotFound("none")
    assert DockerEngine(client).retire_container("app-blue", "app-blue-retired-abc") is False


def test_container_names_by_label():
    client = mock.Mock()
    client.containers.list.return_value = [mock.Mock(), mock.Mock()]
    client.containers.list.return_value[0].name = "app-blue"
    client.containers.list.return_value[1].name = "app-green-retired-abc"
    assert DockerEngine(client).container_names("montaiguillon.app=app") == ["app-blue", "app-green-retired-abc"]
    client.containers.list.assert_called_once_with(all=True, filters={"label": "montaiguillon.app=app"})
    client.containers.list.side_effect = DockerException("daemon gone")
    with pytest.raises(DockerError, match=r"cannot list the containers labelled montaiguillon\.app=app: daemon gone"):
        DockerEngine(client).container_names("montaiguillon.app=app")


def test_container_ip_on_a_network():
    client = mock.Mock()
    client.containers.get.return_value.attrs = {
        "NetworkSettings": {"Networks": {"front": {"IPAddress": "172.20.0.5"}, "back": {"IPAddress": ""}}}
    }
    engine = DockerEngine(client)
    assert engine.container_ip("app-blue", "front") == "172.20.0.5"
    with pytest.raises(DockerError, match="no IP address on network back"):
        engine.container_ip("app-blue", "back")


def test_logs_of_a_missing_container_are_empty():
    client = mock.Mock()
    client.containers.get.side_effect = NotFound("none")
    assert DockerEngine(client).logs("app-blue") == ""


@pytest.mark.parametrize(
    ("ref", "registry"),
    [
        ("ghcr.io/montaiguillon/site@sha256:" + "a" * 64, "ghcr.io"),
        ("lab-registry:5000/montaiguillon/site:1.0", "lab-registry:5000"),
        ("localhost/site:1", "localhost"),
        ("mariadb:10.11", "docker.io"),
        ("library/nginx:1.22", "docker.io"),
    ],
)
def test_registry_of(ref, registry):
    assert docker_common.registry_of(ref) == registry


def test_docker_config_path_follows_docker_config_then_home():
    assert docker_common.docker_config_path({"DOCKER_CONFIG": "/etc/d", "HOME": "/root"}) == "/etc/d/config.json"
    assert docker_common.docker_config_path({"HOME": "/root"}) == "/root/.docker/config.json"


def write_config(tmp_path, auths):
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker/config.json").write_text(json.dumps({"auths": auths}))
    return {"HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("auths", "expected"),
    [
        (None, r"does not exist\): log the server in to lab-registry:5000 with docker_registry_auths"),
        ({"ghcr.io": {"auth": "eDp5"}}, r"has no credentials for lab-registry:5000: log the server in"),
        ({"lab-registry:5000": {"auth": "eDp5"}}, r"has credentials for lab-registry:5000 and the registry refused"),
        ({"http://lab-registry:5000/v2/": {"auth": "eDp5"}}, r"has credentials for lab-registry:5000"),
    ],
)
def test_credentials_hint_says_what_this_user_has(tmp_path, auths, expected):
    environ = write_config(tmp_path, auths) if auths is not None else {"HOME": str(tmp_path)}
    hint = docker_common.credentials_hint("lab-registry:5000/montaiguillon/site:1", environ)
    assert re.search(expected, hint), hint
    assert "eDp5" not in hint  # never the stored secret


@pytest.mark.parametrize(
    "error",
    [
        "Head http://lab-registry:5000/v2/montaiguillon/site/manifests/1: no basic auth credentials",
        "unauthorized: authentication required",
        "denied: denied",
    ],
)
def test_refused_pull_names_the_credentials_it_used(tmp_path, monkeypatch, error):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    write_config(tmp_path, {"ghcr.io": {"auth": "eDp5"}})
    client = mock.Mock()
    client.api.pull.side_effect = api_error(error, 401)
    with pytest.raises(DockerError) as failure:
        DockerEngine(client).pull("lab-registry:5000/montaiguillon/site:1")
    message = str(failure.value)
    assert message.startswith("pull of lab-registry:5000/montaiguillon/site:1 failed: ")
    assert f"{tmp_path}/.docker/config.json has no credentials for lab-registry:5000" in message


def test_other_pull_failures_get_no_credentials_hint():
    client = mock.Mock()
    client.api.pull.return_value = iter([{"error": "manifest unknown"}])
    with pytest.raises(DockerError) as failure:
        DockerEngine(client).pull("ghcr.io/x/site:9")
    assert "credentials" not in str(failure.value)
