"""The service's limits and tuning, as explicit values: `ServiceSettings`.

The command line reads the `[serve]` config section and passes its values
here; the service never reads a `Config` itself. Every default is the
documented one in `default_config.toml`, so `ServiceSettings()` is the service
a plain `catsdogs serve` runs.
"""

from __future__ import annotations

import dataclasses
import os

from catsdogs.choices import DEFAULT_THRESHOLD, default
from catsdogs.errors import CatsdogsError

_BYTES_PER_MEGABYTE = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What the web service accepts and how it runs the model; see the `[serve]` section of the default config.

    Attributes:
        precision: which ONNX export of a run folder to serve ("float32": RUN/export/onnx, else
            RUN/export/onnx-<precision>).
        max_upload_mb: largest request body, in megabytes.
        max_files: most photos in one multipart request.
        max_pixels: largest photo (width x height), checked from its header before decoding.
        max_batch_size: most photos in one model call (1: no micro-batching).
        batch_wait_ms: how long the first photo of a batch waits for others.
        queue_size: most photos admitted at once (decoding or waiting for the model).
        queue_timeout_s: longest a photo waits for the model before it is answered 503.
        max_in_flight: most API requests handled at once.
        inference_workers: model workers, each with its own ONNX Runtime session; 0 uses one per core.
        intra_op_threads: threads per session; 0 shares this process's cores among the workers.
        decode_threads: photo-decoding threads; 0 uses one per core.
        body_timeout_s: seconds a client has to send its whole request body.
        threshold: for two classes, the probability of the second class at or above which it is predicted.
        cors_origin: the one browser origin allowed to call the API from another site; empty: CORS off.
    """

    precision: str = default("serve.precision")
    max_upload_mb: int = default("serve.max_upload_mb")
    max_files: int = default("serve.max_files")
    max_pixels: int = default("serve.max_pixels")
    max_batch_size: int = default("serve.max_batch_size")
    batch_wait_ms: float = default("serve.batch_wait_ms")
    queue_size: int = default("serve.queue_size")
    queue_timeout_s: float = default("serve.queue_timeout_s")
    max_in_flight: int = default("serve.max_in_flight")
    inference_workers: int = default("serve.inference_workers")
    intra_op_threads: int = default("serve.intra_op_threads")
    decode_threads: int = default("serve.decode_threads")
    body_timeout_s: float = default("serve.body_timeout_s")
    threshold: float = DEFAULT_THRESHOLD
    cors_origin: str = default("serve.cors_origin")

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_files", "max_pixels", "max_batch_size", "queue_size", "max_in_flight"):
            _check_positive(name, getattr(self, name))
        for name in ("queue_timeout_s", "body_timeout_s"):
            _check_positive(name, getattr(self, name))
        zero_or_more = ("batch_wait_ms", "inference_workers", "intra_op_threads", "decode_threads")
        if any(getattr(self, name) < 0 for name in zero_or_more):
            received = ", ".join(f"{name}={getattr(self, name)}" for name in zero_or_more)
            raise CatsdogsError(f"{', '.join(zero_or_more)} must be zero or positive. Received: {received}")

    @property
    def max_upload_bytes(self) -> int:
        """The body cap in bytes."""
        return int(self.max_upload_mb * _BYTES_PER_MEGABYTE)

    @property
    def worker_count(self) -> int:
        """Model workers: `inference_workers`, or one per core this process may use."""
        return self.inference_workers or usable_cores()

    @property
    def session_threads(self) -> int:
        """Threads per ONNX Runtime session: `intra_op_threads`, or this process's cores shared among the workers."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, usable_cores() // self.worker_count)

    @property
    def decode_thread_count(self) -> int:
        """Photo-decoding threads: `decode_threads`, or one per core this process may use."""
        return self.decode_threads or usable_cores()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check_positive(name, value):
    if not value > 0:
        raise CatsdogsError(f"The service setting {name} must be positive. Received: {name}={value!r}")
