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


def folder_manifest(path: str | os.PathLike) -> str:
    """Return the manifest of a folder: one `<sha256>  <folder>/<relative path>` line per file, sorted by path.

    The manifest is in the `sha256sum -c` format, so running `sha256sum -c` beside the folder checks every
    file without catsdogs. A folder's SHA-256 is the SHA-256 of this text: it changes when any file's bytes,
    name or presence changes. Empty folders are not listed (they hold no bytes to check).

    Args:
        path: the folder.

    Returns:
        The manifest text, ending in a newline.

    Raises:
        CatsdogsError: if a file name holds a newline or a backslash, which the `sha256sum` format cannot
            write plainly, or the folder holds a symbolic link, whose target the checksum could not vouch for.
    """
    from catsdogs.errors import CatsdogsError

    folder = Path(path)
    lines = []
    for file_path in sorted(folder.rglob("*")):
        relative = f"{folder.name}/{file_path.relative_to(folder).as_posix()}"
        if file_path.is_symlink():
            raise CatsdogsError(
                "The folder holds a symbolic link, and a checksum of the folder cannot vouch for what it points "
                f"to. Replace the link by the file itself. Received: path={file_path}"
            )
        if "\n" in relative or "\\" in relative:
            raise CatsdogsError(
                "A file name in the folder holds a newline or a backslash, which a SHA-256 manifest cannot list "
                f"plainly. Rename the file. Received: path={file_path!r}"
            )
        if file_path.is_file():
            lines.append(f"{sha256_file(file_path)}  {relative}\n")
    return "".join(lines)


def write_checksum(path, digest=None):
    """Write `<path>.sha256` in the `sha256sum -c` format, so the check also works without catsdogs.

    For a folder (a SavedModel, say) the checksum file is the folder's `folder_manifest`, one line per file,
    and the digest returned is the SHA-256 of that manifest.

    Args:
        path: the file or folder the checksum describes.
        digest: a file's hex SHA-256, if already known; computed otherwise (ignored for a folder).

    Returns:
        The hex SHA-256.
    """
    path = Path(path)
    if path.is_dir():
        manifest = folder_manifest(path)
        atomic_write_text(checksum_path(path), manifest)
        return sha256_bytes(manifest.encode("utf-8"))
    digest = digest or sha256_file(path)
    atomic_write_text(checksum_path(path), f"{digest}  {path.name}\n")
    return digest


def verify_checksum(path, *, what="file"):
    """Check a file, or a folder's every file, against the SHA-256 file beside it before it is trusted.

    Args:
        path: the file or folder; `<path>.sha256` must sit beside it.
        what: what the file is, for the error messages ("model", "export").

    Returns:
        The hex SHA-256 (for a folder, of its `folder_manifest`).

    Raises:
        CatsdogsError: if the file or its checksum is missing, or they do not match; for a folder, the
            message names the files that changed, appeared or went missing.
    """
    from catsdogs.errors import CatsdogsError

    path = Path(path)
    expected_path = checksum_path(path)
    if not path.exists():
        raise CatsdogsError(f"The {what} file does not exist. Train a model first. Received: path={path}")
    if not expected_path.is_file():
        raise CatsdogsError(
            f"The {what} has no SHA-256 file beside it, so it cannot be trusted. Expected {expected_path.name} "
            f"next to the {what}; copy the whole run folder. Received: path={path}"
        )
    if path.is_dir():
        return _verify_folder(path, expected_path, what=what)
    expected = expected_path.read_text(encoding="utf-8").split()[0].lower() if expected_path.stat().st_size else ""
    actual = sha256_file(path)
    if actual != expected:
        raise CatsdogsError(
            f"The {what} file does not match its SHA-256: it changed after it was saved (a damaged copy or "
            f"tampering), so it is not loaded. Copy the run folder again or retrain. "
            f"Received: path={path}, expected_sha256={expected}, actual_sha256={actual}"
        )
    return actual


def _verify_folder(path, expected_path, *, what):
    from catsdogs.errors import CatsdogsError

    expected = _manifest_entries(expected_path.read_text(encoding="utf-8"))
    manifest = folder_manifest(path)
    actual = _manifest_entries(manifest)
    if actual != expected:
        changed = sorted(name for name in expected.keys() & actual.keys() if expected[name] != actual[name])
        missing = sorted(expected.keys() - actual.keys())
        added = sorted(actual.keys() - expected.keys())
        differences = ", ".join(
            f"{kind}={' '.join(names)}"
            for kind, names in (("changed", changed), ("missing", missing), ("added", added))
            if names
        )
        raise CatsdogsError(
            f"The {what} folder does not match its SHA-256 manifest ({expected_path.name}): files changed after it "
            "was saved (a damaged copy or tampering), so it is not loaded. Copy the folder again or export again. "
            f"Received: path={path}, {differences}"
        )
    return sha256_bytes(manifest.encode("utf-8"))


def _manifest_entries(text):
    entries = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            entries[name] = digest.lower()
    return entries
