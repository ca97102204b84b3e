"""The dump scanner: counts rows and reads the header as the bytes stream past,
and the dump tool's flags for a server version.
"""

from __future__ import annotations

import re


class DumpScanner:
    """Read a mysqldump/mariadb-dump stream once, without storing it.

    Learns the binlog position (``--master-data=2``/``--source-data=2``), the GTID
    position, the server version, the tables (``CREATE TABLE``) and the exact
    number of rows of each table in the dump, and whether the dump ends with the
    ``-- Dump completed`` trailer. Works for both INSERT layouts (all rows on one
    line, or one row per line as MariaDB 10.11 writes them). The dump tools escape
    newlines inside strings, so a line never starts inside a string.
    """

    _INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES")
    _CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
    _POSITION = re.compile(
        rb"^-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^']+)',"
        rb" (?:MASTER|SOURCE)_LOG_POS=(\d+)"
    )
    _MARIADB_GTID = re.compile(rb"^-- SET GLOBAL gtid_slave_pos='([^']*)'")
    _MYSQL_GTID = re.compile(rb"^SET @@GLOBAL\.GTID_PURGED=(?:/\*!80000 '\+'\*/ )?'([^']*)'")
    _VERSION = re.compile(rb"^-- Server version\s+(\S.*?)\s*$")
    _TRAILER = b"-- Dump completed"

    def __init__(self):
        self.total_bytes = 0
        self.row_counts = {}
        self.binlog_file = None
        self.binlog_position = None
        self.gtid = None
        self.server_version = None
        self._pending = bytearray()
        self._insert_table = None
        self._tail = b""

    def feed(self, data):
        self.total_bytes += len(data)
        self._tail = (self._tail + data[-256:])[-256:]
        self._pending += data
        self._process(final=False)

    def finish(self):
        self._process(final=True)
        return self

    @property
    def trailer_ok(self):
        lines = [line.strip() for line in self._tail.splitlines() if line.strip()]
        return bool(lines) and lines[-1].startswith(self._TRAILER)

    @staticmethod
    def _name(raw):
        return raw.replace(b"``", b"`").decode("utf-8", "replace")

    def _process(self, final):
        buf = self._pending
        pos = 0
        while pos < len(buf):
            if self._insert_table is not None:
                # Rows of an INSERT: whole lines at once. The statement ends at the
                # first ";" that ends a line (a string never holds a raw newline).
                end = buf.find(b";\n", pos)
                if end >= 0:
                    self._rows(buf[pos : end + 1])
                    pos = end + 2
                    continue
                last = len(buf) - 1 if final else buf.rfind(b"\n", pos)
                if last >= 0:
                    self._rows(buf[pos : last + 1])
                    pos = last + 1
                break
            end = buf.find(b"\n", pos)
            if end < 0:
                if final:
                    self._line(bytes(buf[pos:]))
                    pos = len(buf)
                break
            self._line(bytes(buf[pos:end]))
            pos = end + 1
        del buf[:pos]

    def _rows(self, block):
        # Drop what is inside strings at C speed: escaped pairs (\\ first, then \'),
        # then every other piece between quotes. Whole lines only, so quotes pair up.
        pieces = bytes(block).replace(b"\\\\", b"").replace(b"\\'", b"").split(b"'")
        stripped = b"".join(pieces[::2])
        self.row_counts[self._insert_table] = self.row_counts.get(self._insert_table, 0) + stripped.count(b"(")
        if stripped.rstrip().endswith(b";"):
            self._insert_table = None

    def _line(self, line):
        if line.startswith(b"INSERT INTO `"):
            match = self._INSERT.match(line)
            if match:
                self._insert_table = self._name(match[1])
                self._rows(line[match.end() :])
        elif line.startswith(b"CREATE TABLE `"):
            match = self._CREATE.match(line)
            if match:
                self.row_counts.setdefault(self._name(match[1]), 0)
        elif line.startswith(b"-- "):
            for pattern, handler in (
                (self._POSITION, self._set_position),
                (self._MARIADB_GTID, self._set_gtid),
                (self._VERSION, self._set_version),
            ):
                match = pattern.match(line)
                if match:
                    handler(match)
        elif line.startswith(b"SET @@GLOBAL.GTID_PURGED"):
            match = self._MYSQL_GTID.match(line)
            if match:
                self._set_gtid(match)

    def _set_position(self, match):
        self.binlog_file, self.binlog_position = match[1].decode(), int(match[2])

    def _set_gtid(self, match):
        self.gtid = match[1].decode()

    def _set_version(self, match):
        self.server_version = match[1].decode("utf-8", "replace")


def check_dump(scan, exit_code, min_size_bytes, tool, stderr=""):
    """Return the reason a finished dump is unusable, or None when it is good."""
    detail = f": {stderr.strip()[-500:]}" if stderr.strip() else ""
    if exit_code != 0:
        return f"{tool} exited with code {exit_code}{detail}"
    if scan.total_bytes < min_size_bytes:
        return (
            f"the dump is suspiciously small ({scan.total_bytes} bytes < min_size_bytes {min_size_bytes}):"
            f" a broken pipe or an empty database?{detail}"
        )
    if not scan.trailer_ok:
        return f"the dump does not end with the '-- Dump completed' trailer: it was cut short{detail}"
    return None


def dump_flags(server_version, log_bin):
    """The dump tool's flags (no credentials) for this server."""
    flags = [
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--max-allowed-packet=1G",
    ]
    if log_bin:
        if "mariadb" in (server_version or "").lower():
            flags += ["--master-data=2", "--gtid"]
        elif version_tuple(server_version) >= (8, 0, 26):
            flags += ["--source-data=2"]
        else:
            flags += ["--master-data=2"]
    return flags


def version_tuple(version):
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)
