"""Checking SOURCE files on every core: read, SHA-256, full decode and normalisation, staging.

Each file is read once, hashed, fully decoded by `images.clean_image_bytes`
and, when the job has a staging folder, written to it under its content's name
(`<sha256 of the stored bytes><extension>`). Staging lets the workers write
while they decode, instead of writing everything after the split is known,
and lets an interrupted run reuse what it already wrote. `prepare` then only
renames staged files into their split folders.

Worker processes, not threads: on the 2-core development machine, checking
the 4,000 seed-split photos (no writes) ran at 7,600 and 4,600 images/s with
two processes against 4,700 and 4,300 with two threads, in two interleaved
rounds; Pillow releases the GIL while decoding but not while parsing headers
in Python.

Test hook: when the environment variable CATSDOGS_PREPARE_TEST_DELAY holds a
number of seconds, every checked and every written file sleeps that long, so a
test can kill a run half-way. It is meant for tests only.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from catsdogs.data.sources import SourceReader
from catsdogs.fileio import sha256_bytes, sha256_file
from catsdogs.images import ImageError, clean_image_bytes

DELAY_VARIABLE = "CATSDOGS_PREPARE_TEST_DELAY"
# Below this many files, starting worker processes costs more than it saves.
_MIN_FILES_FOR_PROCESSES = 200


@dataclasses.dataclass(frozen=True)
class CheckJob:
    """What every worker needs to know, sent once per worker rather than per file."""

    root: Path
    is_zip: bool
    max_pixels: int
    min_side: int
    staging_dir: Path | None


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome for one file.

    Attributes:
        index: the file's position in the source listing.
        sha256: SHA-256 of the source bytes (what "duplicate" means).
        status: "ok" or "quarantined".
        reason: why it was quarantined; empty when ok.
        extension: ".jpg" or ".png" for the stored file.
        stored_sha256: SHA-256 of the bytes to store (equal to `sha256` when unchanged).
        stored_size: their length.
        note: what was normalised; empty when nothing was.
        data: the stored bytes, kept only for a normalised file that was not staged.
    """

    index: int
    sha256: str
    status: str
    reason: str = ""
    extension: str = ""
    stored_sha256: str = ""
    stored_size: int = 0
    note: str = ""
    data: bytes | None = None


def staging_path(staging_dir, stored_sha256, extension):
    """Return where the staged copy of some stored bytes lives."""
    return Path(staging_dir) / f"{stored_sha256}{extension}"


def holds_bytes(path, size, sha256):
    """Return True when the file at `path` exists and holds exactly the bytes with this size and SHA-256."""
    try:
        return path.stat().st_size == size and sha256_file(path) == sha256
    except (FileNotFoundError, NotADirectoryError):
        return False


def hook_delay():
    """Return the per-file delay of the test hook, in seconds (0 when unset)."""
    try:
        return max(0.0, float(os.environ.get(DELAY_VARIABLE, "0") or 0))
    except ValueError:
        return 0.0


def available_cores():
    """Return the number of cores this process may run on (fewer than the machine's under taskset or a quota)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_files(job, tasks, *, workers=None, progress=True):
    """Check files, in parallel when there are enough of them.

    Args:
        job: a `CheckJob`.
        tasks: list of (index, member) pairs, member as in `SourceFile.member`.
        workers: number of processes; None uses every core available to us.
        progress: show a progress bar.

    Returns:
        A dict from index to `CheckResult`.
    """
    workers = workers or available_cores()
    results = {}
    with tqdm(total=len(tasks), unit="img", desc="checking", disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1 or len(tasks) < _MIN_FILES_FOR_PROCESSES:
            _start_worker(job, in_process=True)
            for result in _check_chunk(tasks):
                results[result.index] = result
                bar.update()
            return results
        # Small chunks keep the progress bar moving and both cores busy to the end;
        # not too small, or the inter-process traffic starts to cost.
        chunk_size = max(4, min(64, len(tasks) // (workers * 16)))
        chunks = [tasks[start : start + chunk_size] for start in range(0, len(tasks), chunk_size)]
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=_process_context(), initializer=_start_worker, initargs=(job,)
        )
        try:
            futures = [pool.submit(_check_chunk, chunk) for chunk in chunks]
            for future in concurrent.futures.as_completed(futures):
                chunk_results = future.result()
                for result in chunk_results:
                    results[result.index] = result
                bar.update(len(chunk_results))
        except BaseException:
            # Ctrl-C or an error: do not wait for the queued chunks.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return results


def _process_context():
    # Forking is the fastest start, but forking a process that already runs
    # TensorFlow's threads (e.g. a test session) can deadlock the child.
    if sys.platform.startswith("linux") and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


_job = None
_reader = None
_delay = 0.0


def _start_worker(job, in_process=False):
    global _job, _reader, _delay
    _job, _reader, _delay = job, SourceReader(job.root, job.is_zip), hook_delay()
    if in_process:
        return
    # The parent handles Ctrl-C; workers just stop when it goes away.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()


def _die_with_parent():
    # If the parent is killed (SIGKILL leaves it no chance to clean up), Linux
    # kills this worker too, instead of leaving it waiting for work forever.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _write_staged(path, data):
    # A staged file is named by the SHA-256 of its bytes and checked against it
    # before any reuse, so it needs neither a temporary name nor its own fsync:
    # a half-written one is simply written again. The split folders only ever
    # receive it whole, by `os.replace`, and `prepare` flushes DATA to disk once
    # before writing the manifest. A per-file fsync here halved the speed.
    try:
        handle = open(path, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "wb")
    with handle:
        handle.write(data)


def _check_chunk(tasks):
    return [_check_one(index, member) for index, member in tasks]


def _check_one(index, member):
    try:
        data = _reader.read(member)
    except Exception as error:  # an unreadable file (permissions, a bad zip member) is quarantined, not fatal
        return CheckResult(index, "", "quarantined", f"unreadable: {type(error).__name__}")
    sha256 = sha256_bytes(data)
    try:
        clean = clean_image_bytes(data, max_pixels=_job.max_pixels, min_side=_job.min_side)
    except ImageError as error:
        return CheckResult(index, sha256, "quarantined", error.reason)
    stored_sha256 = sha256_bytes(clean.data) if clean.changed else sha256
    kept = None
    if _job.staging_dir is not None:
        path = staging_path(_job.staging_dir, stored_sha256, clean.extension)
        if not holds_bytes(path, len(clean.data), stored_sha256):
            _write_staged(path, clean.data)
    elif clean.changed:
        kept = clean.data
    if _delay:
        time.sleep(_delay)
    return CheckResult(index, sha256, "ok", "", clean.extension, stored_sha256, len(clean.data), clean.note, kept)
