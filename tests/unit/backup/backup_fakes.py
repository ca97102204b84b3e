"""Fakes for the backup/restore tests (Docker low-level API, PyMySQL).

The fake Docker API answers ``exec_start(socket=True)`` with one end of a real
socketpair and writes Docker's multiplexed frames on the other end, so the
module's frame reader, stdin half-close and exit-code logic run for real.
"""

import contextlib
import importlib
import io
import os
import re
import socket
import stat
import struct
import tarfile
import threading

from ansible.module_utils.montaiguillon.common.docker_engine import DockerException

MARIADB_DUMP = b"""/*M!999999\\- enable the sandbox mode */
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: app
-- ------------------------------------------------------
-- Server version\t10.11.19-MariaDB-0+deb12u1-log

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;
--
-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=2218;

--
-- Table structure for table `empty_t`
--

DROP TABLE IF EXISTS `empty_t`;
CREATE TABLE `empty_t` (
  `id` int(11) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

LOCK TABLES `empty_t` WRITE;
UNLOCK TABLES;

DROP TABLE IF EXISTS `users`;
CREATE TABLE `users` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `name` varchar(100) DEFAULT NULL,
  `bio` text DEFAULT NULL,
  `avatar` blob DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=4 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

LOCK TABLES `users` WRITE;
INSERT INTO `users` VALUES
(1,'a','x),(y\\'z\\n(',0x00FF27),
(2,'b',NULL,NULL),
(3,'c\\'d','),(;','',0x01);
INSERT INTO `users` VALUES
(4,'(((','\\\\',NULL);
UNLOCK TABLES;

--
-- Temporary table structure for view `v_users`
--
/*!50001 CREATE VIEW `v_users` AS SELECT
 NULL AS `id`,
 NULL AS `name` */;

DROP TABLE IF EXISTS `we``ird`;
CREATE TABLE `we``ird` (
  `id` int(11) NOT NULL
) ENGINE=InnoDB;
INSERT INTO `we``ird` VALUES
(1),
(2);

--
-- The deferred gtid setting for slave corresponding to the master-data CHANGE-MASTER follows
--
-- SET GLOBAL gtid_slave_pos='0-1-8';
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on 2026-11-26  9:11:08
"""
MARIADB_COUNTS = {"empty_t": 0, "users": 4, "we`ird": 2}

MYSQL_DUMP = b"""-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
-- Server version\t8.0.36
SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23';
-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000007', SOURCE_LOG_POS=157;
CREATE TABLE `orders` (
  `id` int NOT NULL
) ENGINE=InnoDB;
INSERT INTO `orders` VALUES (1,'x\\'),(y'),(2,'a;b'),(3,NULL);
INSERT INTO `orders` VALUES (4,'last');
-- Dump completed on 2026-11-26 10:00:00
"""
MYSQL_COUNTS = {"orders": 4}

TOOLS_OUT = b"/usr/bin/mariadb-dump\n/usr/bin/mysqldump\n/usr/bin/mariadb\n/usr/bin/mariadb-binlog\n"
PASSWORD = 's3cr"et\\pw'


def frame(stream, data):
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data


def pad_dump(dump, size):
    """Make a dump bigger (a comment block) so it passes min_size checks."""
    filler = b"-- padding " + b"x" * 60 + b"\n"
    head, _, tail = dump.partition(b"\n")
    return head + b"\n" + filler * (size // len(filler) + 1) + tail


def untar(data):
    if not isinstance(data, bytes | bytearray):
        data = b"".join(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers()}


class FakeAPI:
    """The subset of docker.APIClient the backup code uses, scripted per command."""

    def __init__(self, dump=MARIADB_DUMP, running=True):
        self.dump = dump
        self.dump_err = b""
        self.dump_code = 0
        self.client_err = b""
        self.client_code = 0
        self.binlog_out = b"# binlog events\n"
        self.running = running
        self.pid = 0  # the container's process as the engine reports it (0: none)
        self.container_id = "c0ffee" * 10 + "abcd"
        self.execs = {}
        self.commands = []
        self.envs = []
        self.files = {}
        self.loaded = []
        self.removed_dirs = []
        self.created = []
        self.removed_containers = []
        self.frame_size = 1000
        # (host_dir, container_dir): a writable bind mount both sides see, as the
        # mysql role's socket directory is; None: the dump comes through the exec.
        self.shared = None
        self.dump_opens_fifo = True
        self.exec_pid = 4321  # what exec_inspect reports for a running exec
        self.client_opens_fifo = True

    # exec ----------------------------------------------------------------
    def exec_create(self, container, cmd, stdout=True, stderr=True, stdin=False, tty=False, environment=None, user=""):
        exec_id = f"exec-{len(self.execs)}"
        self.execs[exec_id] = {"cmd": cmd, "stdin": stdin, "container": container, "done": threading.Event()}
        self.commands.append(list(cmd))
        self.envs.append(environment)
        return {"Id": exec_id}

    def exec_start(self, exec_id, socket=False, **_kwargs):
        assert socket, "the backup code must use the raw socket"
        ours, theirs = _socketpair()
        record = self.execs[exec_id]

        def run():
            data = b""
            if record["stdin"]:
                chunks = []
                while True:
                    piece = theirs.recv(65536)
                    if not piece:
                        break
                    chunks.append(piece)
                data = b"".join(chunks)
            out, err, code = self.handle(record["cmd"], data, record)
            try:
                for start in range(0, len(out), self.frame_size):
                    theirs.sendall(frame(1, out[start : start + self.frame_size]))
                if err:
                    theirs.sendall(frame(2, err))
            except OSError:
                pass
            record["code"] = code
            record["done"].set()
            theirs.close()

        threading.Thread(target=run, daemon=True).start()
        return ours

    def exec_inspect(self, exec_id):
        record = self.execs[exec_id]
        done = record["done"].is_set()  # as the engine: the state now (callers poll)
        return {"Running": not done, "ExitCode": record.get("code"), "Pid": self.exec_pid}  # kept after exit

    def handle(self, cmd, stdin, record):
        tool = cmd[0]
        if cmd[:3] == ["sh", "-c", 'exec "$@" < "$0"']:  # the client reading a FIFO as its stdin
            if not self.client_opens_fifo:
                return b"", b"sh: cannot open fifo", 2
            with open(self.on_host(cmd[3]), "rb") as fifo:
                return self.handle(cmd[4:], fifo.read(), record)
        if tool == "sh":
            return TOOLS_OUT, b"", 0
        if tool == "mktemp":
            return b"/tmp/tmp.fake1\n", b"", 0
        if tool == "rm":
            self.removed_dirs.append(cmd[-1])
            return b"", b"", 0
        if tool == "test" and cmd[1] == "-p":
            return b"", b"", 0 if self.shared and stat.S_ISFIFO(os.stat(self.on_host(cmd[2])).st_mode) else 1
        if tool in ("mariadb-dump", "mysqldump"):
            result = next((a.split("=", 1)[1] for a in cmd if a.startswith("--result-file=")), None)
            if result is None:
                return self.dump, self.dump_err, self.dump_code
            if self.dump_opens_fifo:
                with contextlib.suppress(BrokenPipeError), open(self.on_host(result), "wb") as fifo:
                    for start in range(0, len(self.dump), self.frame_size):
                        fifo.write(self.dump[start : start + self.frame_size])
            return b"", self.dump_err, self.dump_code
        if tool in ("mariadb", "mysql"):
            self.loaded.append(stdin)
            return b"", self.client_err, self.client_code
        if tool == "mariadb-binlog":
            return self.binlog_out, b"", 0
        return b"", b"unknown command", 127

    def on_host(self, path):
        host_dir, container_dir = self.shared
        assert path.startswith(container_dir + "/"), path
        return os.path.join(host_dir, path[len(container_dir) + 1 :])

    # archive, containers --------------------------------------------------
    def put_archive(self, container, path, data):
        for name, (content, mode) in untar(data).items():
            self.files[f"{container}:{path}/{name}"] = (content, mode)
        return True

    def inspect_container(self, container):
        if container == "missing":
            raise DockerException("404 Client Error: No such container: missing")
        mounts = [
            {"Type": "bind", "Source": "/etc/montaiguillon/mysql/conf.d", "Destination": "/etc/mysql/conf.d"},
            {"Type": "bind", "Source": "/run/montaiguillon/mysql", "Destination": "/run/mysqld"},
            {"Type": "volume", "Name": "mysql-data", "Destination": "/var/lib/mysql"},
        ]
        if self.shared:
            mounts[1] = {"Type": "bind", "Source": self.shared[0], "Destination": self.shared[1], "RW": True}
        return {
            "Id": self.container_id,
            "Name": f"/{container}",
            "Image": "sha256:abc123",
            "State": {"Running": self.running, "Pid": self.pid},
            "Config": {"Image": "montaiguillon/mariadb:10.11", "Cmd": ["mariadbd", "--log-bin=mysql-bin"]},
            "Mounts": mounts,
        }

    def create_host_config(self, **kwargs):
        return kwargs

    def create_container(self, image, **kwargs):
        self.created.append({"image": image, **kwargs})
        return {"Id": f"drill-{len(self.created)}"}

    def start(self, container_id):
        return None

    def remove_container(self, container_id, v=False, force=False):
        self.removed_containers.append((container_id, v, force))

    def logs(self, container_id, tail=20):
        return b"log line"


def _socketpair():
    return socket.socketpair()


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.result = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.conn.queries.append((sql, args))
        if sql == "SELECT VERSION()":
            self.result = [(self.conn.version,)]
        elif sql == "SELECT @@log_bin":
            self.result = [(1 if self.conn.log_bin else 0,)]
        elif "information_schema.SCHEMATA" in sql:
            self.result = [("utf8mb4", "utf8mb4_general_ci")] if self.conn.exists else []
        elif sql.startswith("SELECT COUNT(*) FROM `"):
            table = re.search(r"\.`((?:[^`]|``)+)`$", sql)[1].replace("``", "`")
            self.result = [(self.conn.counts.get(table, 0),)]
        elif sql == "SHOW BINARY LOGS":
            self.result = [(name, 100) for name in self.conn.binlogs]
        elif sql == "SELECT @@log_bin_basename":
            self.result = [("/var/lib/mysql/mysql-bin",)]
        elif sql == "SELECT @@skip_networking":
            self.result = [(0,)]
        else:
            self.result = [("42",)]

    def fetchone(self):
        return self.result[0] if self.result else None

    def fetchall(self):
        return list(self.result)

    def fetchmany(self, size):
        return list(self.result[:size])


class FakeConn:
    def __init__(self, counts=None, version="10.11.19-MariaDB-0+deb12u1-log", log_bin=True, exists=True):
        self.counts = dict(MARIADB_COUNTS if counts is None else counts)
        self.version = version
        self.log_bin = log_bin
        self.exists = exists
        self.binlogs = ["mysql-bin.000001", "mysql-bin.000002"]
        self.queries = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


LOGIN = {
    "login_user": "root",
    "login_password": PASSWORD,
    "login_unix_socket": "/run/x.sock",
    "login_host": None,
    "login_port": 3306,
    "connect_timeout": 5,
}


def rsync_through_a_local_shell(monkeypatch, tmp_path, name):
    """Make ``montaiguillon.backup.offsite.<name>`` (a function returning an rsync command line) reach the
    store through a local shell instead of ssh: rsync runs for real. Returns the key files' arguments."""
    module = importlib.import_module("ansible.module_utils.montaiguillon.backup.offsite")
    real = getattr(module, name)
    fake_ssh = tmp_path / "fake_ssh"
    fake_ssh.write_text('#!/bin/sh\n[ "$1" = -l ] && shift 2\nshift\nexec sh -c "$*"\n')
    fake_ssh.chmod(0o755)

    def local(*args, **kwargs):
        cmd = real(*args, **kwargs)
        cmd[cmd.index("--rsh") + 1] = str(fake_ssh)
        return cmd

    monkeypatch.setattr(module, name, local)
    for key in ("key", "known_hosts"):
        (tmp_path / key).write_text("x")
    return {"ssh_key": str(tmp_path / "key"), "known_hosts": str(tmp_path / "known_hosts")}
