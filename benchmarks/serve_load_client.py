"""The load generator of benchmarks/serve_load.py: httpx AsyncClient loops in a process of their own.

It sends real photos, one per request, as the multipart body a browser or
`curl -F files=@photo.jpg` sends to `POST /v1/predict`. The bodies are built
once before the clock starts, so the generator spends its CPU on HTTP only; it
measures its own CPU time (`resource.getrusage`) over the measured window, so
the report can give its share of the machine. Three modes:

- closed: `--concurrency N` loops, each sending its next request as soon as
  its answer is in, for `--seconds` after `--warmup-seconds` (or for a total of
  `--requests`);
- open: a request every 1/`--rate` seconds whatever the answers (overload),
  with at most `--max-outstanding` requests in flight; the ones beyond are not
  sent and are counted;
- probe: one loop of `GET --path` (e.g. /healthz) every `--interval-ms`.

It prints one JSON object on stdout: counts by status, latency percentiles in
milliseconds (all answers, 200s and 503s apart), throughput and its own CPU.
It targets 127.0.0.1 only.

Usage (benchmarks/serve_load.py runs it):
    python benchmarks/serve_load_client.py closed --url http://127.0.0.1:8000 --concurrency 16 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import resource
import secrets
import sys
import time
import typing
import urllib.parse
from pathlib import Path

if typing.TYPE_CHECKING:
    import httpx

# One prepared request body and its Content-Type header.
Body = tuple[bytes, str]

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats-original-sample" / "train"
PREDICT_PATH = "/v1/predict"
# A connection failure or timeout is recorded under its exception name instead of a status code.
TRANSPORT_ERROR = "transport_error"


def select_photos(source: Path, count: int) -> list[Path]:
    """Return `count` JPEG photos spread evenly over `source` by name (cats and dogs alike).

    Raises:
        SystemExit: when the folder holds no JPEG photos.
    """
    files = sorted(Path(source).glob("*.jpg"))
    if not files:
        raise SystemExit(
            "The load generator needs real photos, but the folder holds no .jpg files. Pass --source with the "
            f"dogs-vs-cats photos. Received: source={source}"
        )
    step = max(len(files) // max(count, 1), 1)
    return files[::step][:count]


def multipart_body(filename: str, data: bytes) -> Body:
    """Return (body, Content-Type) of a multipart form with one `files` part holding `data`."""
    boundary = secrets.token_hex(16)
    while boundary.encode() in data:
        boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def percentile(sorted_values: list[float], percent: float) -> float | None:
    """The nearest-rank percentile of an ascending list, or None for an empty one."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_s: list[float]) -> dict:
    """Count, mean, p50, p95, p99 and max of latencies in seconds, as milliseconds."""
    values = sorted(latency * 1000.0 for latency in latencies_s)
    summary = {"count": len(values)}
    for name, percent in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
        found = percentile(values, percent)
        summary[name] = None if found is None else round(found, 2)
    summary["mean_ms"] = round(sum(values) / len(values), 2) if values else None
    summary["max_ms"] = round(values[-1], 2) if values else None
    return summary


class Recorder:
    """Collects (end time, latency, outcome) of each request and the process's CPU time over a window."""

    def __init__(self) -> None:
        self.records: list[tuple[float, float, str]] = []
        self.window_start = 0.0
        self.window_end = 0.0
        self._cpu_start = 0.0
        self._clock_start = 0.0

    def open_window(self, start: float, end: float) -> None:
        """Count the requests that end between `start` and `end` (perf_counter seconds)."""
        self.window_start, self.window_end = start, end

    def start_cpu(self) -> None:
        """Start the CPU clock: what came before (imports, reading photos) is not the load's cost."""
        self._cpu_start, self._clock_start = _cpu_seconds(), time.perf_counter()

    def record(self, started: float, ended: float, outcome: str) -> None:
        """Keep one request's end, latency and outcome ("200", "503", "transport_error:ReadTimeout"...)."""
        self.records.append((ended, ended - started, outcome))

    def result(self, **extra) -> dict:
        """Counts, throughput, latency percentiles and CPU for the window, with `extra` keys added."""
        cpu = _cpu_seconds() - self._cpu_start
        elapsed = max(time.perf_counter() - self._clock_start, 1e-9)
        inside = [record for record in self.records if self.window_start <= record[0] <= self.window_end]
        window = max(self.window_end - self.window_start, 1e-9)
        outcomes = collections.Counter(outcome for _, _, outcome in inside)
        ok = [latency for _, latency, outcome in inside if outcome == "200"]
        rejected = [latency for _, latency, outcome in inside if outcome == "503"]
        failures = len(inside) - len(ok)
        return {
            "window_s": round(window, 3),
            "completed": len(inside),
            "outcomes": dict(sorted(outcomes.items())),
            "throughput_rps": round(len(ok) / window, 3),
            "answered_rps": round(len(inside) / window, 3),
            "error_rate": round(failures / len(inside), 5) if inside else None,
            "share_503": round(len(rejected) / len(inside), 5) if inside else None,
            "latency_all": summarize([latency for _, latency, _ in inside]),
            "latency_200": summarize(ok),
            "latency_503": summarize(rejected),
            "client_cpu_s": round(cpu, 3),
            # Of the whole machine while it ran (warm-up included, as its CPU is): CPU seconds over
            # (seconds x cores), the part the server could not use.
            "client_cpu_share": round(cpu / (elapsed * _cores()), 4),
            **extra,
        }


async def send(client: httpx.AsyncClient, request: httpx.Request, recorder: Recorder) -> None:
    """Send one request, read its whole answer, and record its latency and status (or exception name)."""
    started = time.perf_counter()
    try:
        response = await client.send(request)
        outcome = str(response.status_code)
    except Exception as error:  # Any failure is a result here, recorded by its type, not a crash.
        outcome = f"{TRANSPORT_ERROR}:{type(error).__name__}"
    recorder.record(started, time.perf_counter(), outcome)


async def closed_loop(client: httpx.AsyncClient, bodies: list[Body], url: str, arguments: argparse.Namespace) -> dict:
    """`--concurrency` loops that each send the next photo when their answer is in; the window's result."""
    recorder = Recorder()
    counter = iter(range(sys.maxsize))
    total = arguments.requests
    start = time.perf_counter()
    window_start = start + (0.0 if total else arguments.warmup_seconds)
    deadline = window_start + arguments.seconds if not total else math.inf
    recorder.open_window(window_start, deadline)
    recorder.start_cpu()

    async def loop() -> None:
        while True:
            number = next(counter)
            if (total and number >= total) or time.perf_counter() >= deadline:
                return
            body, content_type = bodies[number % len(bodies)]
            request = client.build_request("POST", url, content=body, headers={"Content-Type": content_type})
            await send(client, request, recorder)

    await asyncio.gather(*(loop() for _ in range(arguments.concurrency)))
    if total:
        recorder.open_window(start, time.perf_counter())
    return recorder.result(mode="closed", concurrency=arguments.concurrency)


async def open_loop(client: httpx.AsyncClient, bodies: list[Body], url: str, arguments: argparse.Namespace) -> dict:
    """A request every 1/`--rate` seconds, whatever the answers, at most `--max-outstanding` in flight."""
    recorder = Recorder()
    interval = 1.0 / arguments.rate
    start = time.perf_counter()
    end = start + arguments.seconds
    recorder.open_window(start, math.inf)
    recorder.start_cpu()
    outstanding: set[asyncio.Task] = set()
    sent = not_sent = behind = 0
    number = 0
    while True:
        due = start + number * interval
        if due >= end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -interval:
            behind += 1
        if len(outstanding) >= arguments.max_outstanding:
            not_sent += 1
        else:
            body, content_type = bodies[number % len(bodies)]
            request = client.build_request("POST", url, content=body, headers={"Content-Type": content_type})
            task = asyncio.create_task(send(client, request, recorder))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
            sent += 1
        number += 1
    if outstanding:
        await asyncio.wait(outstanding, timeout=arguments.timeout_s)
    # Every request sent counts, answered after the sending stopped or not, so the window runs to the last answer.
    recorder.open_window(start, time.perf_counter())
    return recorder.result(
        mode="open",
        rate_rps=arguments.rate,
        sent=sent,
        not_sent=not_sent,
        sent_late=behind,
        max_outstanding=arguments.max_outstanding,
    )


async def probe_loop(client: httpx.AsyncClient, url: str, arguments: argparse.Namespace) -> dict:
    """GET `url` every `--interval-ms`, one at a time, for `--seconds`."""
    recorder = Recorder()
    start = time.perf_counter()
    end = start + arguments.seconds
    recorder.open_window(start, math.inf)
    recorder.start_cpu()
    while time.perf_counter() < end:
        await send(client, client.build_request("GET", url), recorder)
        await asyncio.sleep(arguments.interval_ms / 1000.0)
    recorder.open_window(start, time.perf_counter())
    return recorder.result(mode="probe", path=arguments.path, interval_ms=arguments.interval_ms)


async def run(arguments: argparse.Namespace) -> dict:
    """Run the mode the arguments name and return its result."""
    import httpx

    connections = max(arguments.concurrency, arguments.max_outstanding, 1)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=arguments.timeout_s) as client:
        if arguments.mode == "probe":
            return await probe_loop(client, arguments.url + arguments.path, arguments)
        photos = select_photos(arguments.source, arguments.photos)
        bodies = [multipart_body(path.name, path.read_bytes()) for path in photos]
        url = arguments.url + PREDICT_PATH
        if arguments.mode == "closed":
            return await closed_loop(client, bodies, url, arguments)
        return await open_loop(client, bodies, url, arguments)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Read and check the command line; the URL must point at 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("closed", "open", "probe"))
    parser.add_argument("--url", required=True, help="base URL on 127.0.0.1, e.g. http://127.0.0.1:8000")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of .jpg photos")
    parser.add_argument("--photos", type=int, default=200, help="photos to cycle through, spread over the folder")
    parser.add_argument("--concurrency", type=int, default=1, help="closed: concurrent loops")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds (closed, open, probe)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="closed: unmeasured seconds first")
    parser.add_argument("--requests", type=int, default=0, help="closed: send this many requests instead of timing")
    parser.add_argument("--rate", type=float, default=10.0, help="open: requests per second")
    parser.add_argument("--max-outstanding", type=int, default=0, help="open: most requests in flight")
    parser.add_argument("--path", default="/healthz", help="probe: path to GET")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="probe: pause between GETs")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per-request timeout")
    arguments = parser.parse_args(argv)
    host = urllib.parse.urlsplit(arguments.url).hostname
    if host != "127.0.0.1":
        parser.error(f"the load generator targets 127.0.0.1 only. Received: url={arguments.url}")
    if arguments.mode == "open" and (arguments.rate <= 0 or arguments.max_outstanding < 1):
        parser.error(
            "open mode needs --rate above 0 and --max-outstanding of at least 1. "
            f"Received: rate={arguments.rate}, max_outstanding={arguments.max_outstanding}"
        )
    if arguments.mode == "closed" and arguments.concurrency < 1:
        parser.error(f"closed mode needs --concurrency of at least 1. Received: concurrency={arguments.concurrency}")
    arguments.url = arguments.url.rstrip("/")
    return arguments


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> None:
    arguments = parse_arguments()
    result = asyncio.run(run(arguments))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
