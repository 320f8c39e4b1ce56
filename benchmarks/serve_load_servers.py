"""The processes of benchmarks/serve_load.py: `catsdogs serve`, the baseline app and the load generator.

Every server is a process of its own on 127.0.0.1 with a free port, its output
in a log file; `started` waits for its readiness path and stops it with
SIGTERM (then SIGKILL) whatever happens. `memory` and `cpu_seconds` read a
process's resident memory and CPU time from /proc, so the numbers are the
server's own, not the benchmark's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
CLIENT_SCRIPT = HERE / "serve_load_client.py"
BASELINE_SCRIPT = HERE / "serve_baseline_app.py"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
_KILOBYTE = 1024


class BenchmarkError(RuntimeError):
    """A server or the load generator did not do what the benchmark needs; the message says what and where."""


@dataclasses.dataclass
class Server:
    """A server process and where it listens.

    Attributes:
        name: what the report calls it, e.g. "catsdogs serve (max_batch_size=1)".
        process: the server process.
        base_url: http://127.0.0.1:PORT.
        log_path: the file its output goes to.
        ready_path: the path that answers 200 once it can take requests.
    """

    name: str
    process: subprocess.Popen
    base_url: str
    log_path: Path
    ready_path: str

    def log_tail(self, characters: int = 3000) -> str:
        """The end of what the process printed, for error messages."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]
        except OSError:
            return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def catsdogs_serve_command(source: Path, port: int, settings: Mapping[str, object]) -> list[str]:
    """The `catsdogs serve SOURCE --port PORT --set serve.KEY=VALUE...` command line."""
    command = [sys.executable, "-m", "catsdogs", "serve", str(source), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in settings.items():
        command += ["--set", f"serve.{key}={value}"]
    return command


def baseline_command(run_dir: Path, port: int) -> list[str]:
    """The command line of the baseline FastAPI app (benchmarks/serve_baseline_app.py) on `port`."""
    return [sys.executable, str(BASELINE_SCRIPT), str(run_dir), "--port", str(port)]


def start(name: str, command: Sequence[str], port: int, log_dir: Path, *, ready_path: str) -> Server:
    """Start a server command in a process of its own, its output in LOG_DIR/<port>.log, without waiting."""
    log_path = log_dir / f"{port}.log"
    # The server needs no key; one set in the benchmark's shell would turn every request into a 401.
    environment = {name: value for name, value in os.environ.items() if name != "CATSDOGS_API_KEY"}
    environment.update({"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=environment)
    return Server(name, process, f"http://127.0.0.1:{port}", log_path, ready_path)


def wait_until_ready(server: Server, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Poll the server's ready path until it answers 200; return the seconds it took.

    Raises:
        BenchmarkError: when the process exits or the timeout passes first, with the end of its log.
    """
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.process.poll() is not None:
            raise BenchmarkError(
                f"{server.name} exited with status {server.process.returncode} before it was ready; its log "
                f"({server.log_path}) ends:\n{server.log_tail()}"
            )
        try:
            if httpx.get(server.base_url + server.ready_path, timeout=2.0).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchmarkError(
        f"{server.name} was not ready within {timeout_s:.0f} s; its log ({server.log_path}) ends:\n{server.log_tail()}"
    )


def stop(server: Server, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """Send SIGTERM, wait for the exit and return its status; a process that hangs is killed (status None)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        return None


@contextlib.contextmanager
def started(
    name: str, command: Sequence[str], port: int, log_dir: Path, *, ready_path: str, record: dict
) -> Iterator[Server]:
    """Start a server, wait until it is ready, yield it, and stop it; `record` gets its start-up and exit facts."""
    server = start(name, command, port, log_dir, ready_path=ready_path)
    try:
        record["ready_s"] = round(wait_until_ready(server), 2)
        record["memory_at_ready"] = memory(server.process.pid)
        yield server
    finally:
        record["memory_at_end"] = memory(server.process.pid) if server.process.poll() is None else None
        status = stop(server)
        record["exit_status"] = status
        record["log"] = str(server.log_path)


def memory(pid: int) -> dict | None:
    """The process's resident memory now (VmRSS) and its peak (VmHWM), in MiB, from /proc/PID/status."""
    values = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / _KILOBYTE
    except (OSError, ValueError, IndexError):
        return None
    return {"rss_mib": round(values.get("VmRSS", 0.0), 1), "hwm_mib": round(values.get("VmHWM", 0.0), 1)}


def cpu_seconds(pid: int) -> float | None:
    """The process's CPU time so far (user + system, every thread), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are fields 14 and 15 of stat(5); the split above starts at field 3.
    return (int(fields[11]) + int(fields[12])) / ticks


def client_command(mode: str, base_url: str, options: Mapping[str, object]) -> list[str]:
    """The load generator's command line: `serve_load_client.py MODE --url BASE_URL --option value...`."""
    command = [sys.executable, str(CLIENT_SCRIPT), mode, "--url", base_url]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def start_client(mode: str, base_url: str, options: Mapping[str, object]) -> subprocess.Popen:
    """Start the load generator in a process of its own; `finish_client` reads its result."""
    return subprocess.Popen(
        client_command(mode, base_url, options), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_client(process: subprocess.Popen, timeout_s: float) -> dict:
    """Wait for a load generator and return the JSON object it printed.

    Raises:
        BenchmarkError: when it fails, prints no JSON, or runs past `timeout_s` (then it is killed).
    """
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise BenchmarkError(
            f"The load generator ran past {timeout_s:.0f} s and was stopped. Its errors:\n{stderr[-2000:]}"
        ) from None
    if process.returncode != 0:
        raise BenchmarkError(
            f"The load generator failed with status {process.returncode}. Its errors:\n{stderr[-3000:]}"
        )
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchmarkError(f"The load generator printed no result. Its output:\n{stdout[-2000:]}") from None


def scrape_metrics(server: Server) -> dict[str, float]:
    """The server's Prometheus samples as {"name{labels}": value}; empty where it has no /metrics (the baseline)."""
    import httpx

    try:
        response = httpx.get(server.base_url + "/metrics", timeout=10.0)
    except httpx.TransportError:
        return {}
    if response.status_code != 200:
        return {}
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def metrics_change(before: Mapping[str, float], after: Mapping[str, float]) -> dict:
    """What the server counted during a measurement: model calls, their mean batch size, rejections by reason."""
    if not after:
        return {}

    def change(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    calls = change("catsdogs_batch_size_count")
    rejections = {
        name.split('reason="', 1)[1].split('"', 1)[0]: int(change(name))
        for name in after
        if name.startswith("catsdogs_rejections_total{") and 'reason="' in name and change(name)
    }
    return {
        "model_calls": int(calls),
        "mean_batch_size": round(change("catsdogs_batch_size_sum") / calls, 2) if calls else None,
        "mean_inference_ms": round(change("catsdogs_inference_seconds_sum") / calls * 1000, 2) if calls else None,
        "rejections": rejections,
    }


def measure_load(server: Server, mode: str, options: Mapping[str, object], timeout_s: float) -> dict:
    """Run the load generator against a server; add the server's CPU seconds, counters and memory after it."""
    metrics_before = scrape_metrics(server)
    cpu_before = cpu_seconds(server.process.pid)
    result = finish_client(start_client(mode, server.base_url, options), timeout_s)
    cpu_after = cpu_seconds(server.process.pid)
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_s"] = round(cpu_after - cpu_before, 3)
    result["server_metrics"] = metrics_change(metrics_before, scrape_metrics(server))
    result["server_memory"] = memory(server.process.pid)
    result["server_alive"] = server.process.poll() is None
    return result
