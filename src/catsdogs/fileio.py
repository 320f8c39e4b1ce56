"""Atomic file writes and hashing, shared by every module that writes results."""

import hashlib
import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data):
    """Write bytes to `path` so that readers see the old file or the new one, never half.

    The data goes to a temporary file in the same folder, is flushed to disk,
    then renamed over `path` with `os.replace`, which is atomic on POSIX.

    Args:
        path: destination file; its folder is created if missing.
        data: the bytes to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.fchmod(descriptor, 0o666 & ~_current_umask())
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Leave nothing half-written behind, whatever interrupted us.
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask():
    # The only way to read the umask is to set it; put it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    """Write UTF-8 text atomically; see `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, value):
    """Write `value` as indented UTF-8 JSON atomically; see `atomic_write_bytes`."""
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def atomic_copy(source, destination):
    """Copy a file's bytes atomically; the destination never exists half-copied."""
    atomic_write_bytes(destination, Path(source).read_bytes())


def sha256_bytes(data):
    """Return the hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk_size=1 << 20):
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
