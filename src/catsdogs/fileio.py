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


CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path):
    """Return the path of the SHA-256 file that sits beside `path`: `<path>.sha256`."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_checksum(path, digest=None):
    """Write `<path>.sha256` in the `sha256sum -c` format, so the check also works without catsdogs.

    Args:
        path: the file the checksum describes.
        digest: its hex SHA-256, if already known; computed otherwise.

    Returns:
        The hex SHA-256.
    """
    path = Path(path)
    digest = digest or sha256_file(path)
    atomic_write_text(checksum_path(path), f"{digest}  {path.name}\n")
    return digest


def verify_checksum(path, *, what="file"):
    """Check a file against the SHA-256 file beside it before it is trusted.

    Args:
        path: the file; `<path>.sha256` must sit beside it.
        what: what the file is, for the error messages ("model", "export").

    Returns:
        The hex SHA-256.

    Raises:
        CatsdogsError: if the file or its checksum is missing, or they do not match.
    """
    from catsdogs.errors import CatsdogsError

    path = Path(path)
    expected_path = checksum_path(path)
    if not path.is_file():
        raise CatsdogsError(f"The {what} file does not exist. Train a model first. Received: path={path}")
    if not expected_path.is_file():
        raise CatsdogsError(
            f"The {what} has no SHA-256 file beside it, so it cannot be trusted. Expected {expected_path.name} "
            f"next to the {what}; copy the whole run folder. Received: path={path}"
        )
    expected = expected_path.read_text(encoding="utf-8").split()[0].lower() if expected_path.stat().st_size else ""
    actual = sha256_file(path)
    if actual != expected:
        raise CatsdogsError(
            f"The {what} file does not match its SHA-256: it changed after it was saved (a damaged copy or "
            f"tampering), so it is not loaded. Copy the run folder again or retrain. "
            f"Received: path={path}, expected_sha256={expected}, actual_sha256={actual}"
        )
    return actual
