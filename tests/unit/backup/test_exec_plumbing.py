"""The exec plumbing against the fake engine: frames, stdin half-close, credentials, tar, tools, inspect."""

import socket
import threading

import pytest
from ansible.module_utils.montaiguillon.backup.container import (
    ExecStream,
    _FrameReader,
    container_credentials,
    detect_tools,
    inspect_container,
    tar_stream,
)
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.restore import pump_into_exec
from backup_fakes import PASSWORD, FakeAPI, frame, untar


def test_exec_stream_splits_stdout_and_stderr_and_reports_exit_code():
    api = FakeAPI()
    api.dump, api.dump_err, api.dump_code = b"a" * 5000, b"boom", 3
    stream = ExecStream(api, "mysql", ["mariadb-dump", "app"])
    out = b"".join(stream.stdout_chunks())
    assert out == b"a" * 5000
    assert stream.stderr_text() == "boom"
    assert stream.exit_code() == 3


def test_exec_stream_stdin_is_half_closed_so_the_process_sees_eof():
    api = FakeAPI()
    stream = ExecStream(api, "mysql", ["mariadb", "app"], stdin=True)
    output = pump_into_exec(stream, iter([b"SELECT 1;\n", b"SELECT 2;\n"]))
    assert output == b""
    assert api.loaded == [b"SELECT 1;\nSELECT 2;\n"]
    assert stream.exit_code() == 0


def test_frame_reader_handles_frames_split_across_reads():
    ours, theirs = socket.socketpair()
    payload = frame(1, b"hello") + frame(2, b"err") + frame(1, b"x" * 70000)

    def send():
        for i in range(0, len(payload), 7):
            theirs.sendall(payload[i : i + 7])
        theirs.close()

    threading.Thread(target=send, daemon=True).start()
    frames = list(_FrameReader(ours))
    assert frames == [(1, b"hello"), (2, b"err"), (1, b"x" * 70000)]


def test_container_credentials_are_a_0600_file_removed_afterwards():
    api = FakeAPI()
    with container_credentials(api, "mysql", "root", PASSWORD) as path:
        assert path == "/tmp/tmp.fake1/client.cnf"
        content, mode = api.files["mysql:/tmp/tmp.fake1/client.cnf"]
        assert mode == 0o600
        assert b'password="s3cr\\"et\\\\pw"' in content
    assert api.removed_dirs == ["/tmp/tmp.fake1"]
    assert all(PASSWORD not in " ".join(cmd) for cmd in api.commands)


def test_tar_stream_is_a_valid_archive(tmp_path):
    source = tmp_path / "mysql-bin.000001"
    source.write_bytes(b"\xfebin" + bytes(range(256)) * 10)
    files = untar(tar_stream("mysql-bin.000001", str(source)))
    assert files["mysql-bin.000001"] == (source.read_bytes(), 0o600)


def test_detect_tools_prefers_mariadb_names():
    assert detect_tools(FakeAPI(), "mysql") == {
        "dump": "mariadb-dump",
        "client": "mariadb",
        "binlog": "mariadb-binlog",
        "background": [],
    }


@pytest.mark.parametrize("running", [False])
def test_inspect_container_refuses_a_stopped_container(running):
    with pytest.raises(BackupError, match="is not running"):
        inspect_container(FakeAPI(running=running), "mysql")
