"""Files written all or nothing, read when present, and errors a person can act on.

One implementation for every part (the release ledger, the backup manifests
and catalog, the proxy's upstream file): a temp file in the same directory,
fsync, rename, fsync of the directory.
"""

import contextlib
import errno
import hashlib
import json
import os
import tempfile

CHUNK = 1 << 20


class FileWriteError(OSError):
    """A write that failed, with ``describe_os_error``'s message; ``path`` unchanged."""

    def __str__(self):
        return str(self.strerror)  # the sentence alone, without OSError's "[Errno N]" prefix


def describe_os_error(exc, path, action="writing"):
    """``exc`` as a sentence naming ``path`` (a full disk and a quota said plainly)."""
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while {action} {path}"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while {action} {path}"
    return f"{exc.strerror or exc} while {action} {path}"


def fsync_dir(directory):
    """Make a rename or an unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data, mode=0o600):
    """Write ``path`` all or nothing: readers see the old file or the new one.

    On failure the temp file is removed, ``path`` is left as it was and
    ``FileWriteError`` says what happened.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".partial")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FileWriteError(exc.errno, describe_os_error(exc, path)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text, mode=0o644):
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path, document, mode=0o600):
    atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode(), mode)


def read_text(path):
    """Content of ``path``, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
