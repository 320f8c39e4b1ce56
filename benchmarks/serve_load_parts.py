"""The server parts of benchmarks/serve_load.py: closed loops, overload, layouts, the baseline and the soak.

Each part starts its own server processes (see serve_load_servers.py), drives
them with the load generator in a process of its own, and stores what it
measured in `Context.results` as it goes, so a part that fails keeps the
levels measured before the failure; its error is kept in `Context.errors`
and the other parts still run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from serve_load_local import usable_cores
from serve_load_servers import (
    Server,
    baseline_command,
    catsdogs_serve_command,
    finish_client,
    free_port,
    measure_load,
    memory,
    start_client,
    started,
)

# Slack on top of the measured seconds before a load generator counts as hung: start-up, warm-up, the tail.
CLIENT_SLACK_S = 180.0
HEALTHZ_INTERVAL_MS = 20.0
# The overload's requests give up after this long: far beyond queue_timeout_s, so a 503 is the server's.
OVERLOAD_REQUEST_TIMEOUT_S = 60.0


@dataclasses.dataclass
class Context:
    """What every part needs: the options, the models, where logs go, and where results and errors are kept."""

    arguments: argparse.Namespace
    targets: list[dict]
    log_dir: Path
    results: dict
    errors: dict

    def run_servers(self) -> None:
        """Run the server parts the options ask for, in the order the report shows them."""
        parts = self.arguments.parts
        for target in self.targets:
            if "closed" in parts or ("overload" in parts and target["main"]):
                run_part(self, f"server:{target['label']}", lambda t=target: self.closed_and_overload(t))
        if "layouts" in parts:
            run_part(self, "layouts", self.layouts)
        if "baseline" in parts:
            run_part(self, "baseline", self.baseline)
        if "soak" in parts:
            run_part(self, "soak", self.soak)

    def load_options(self, concurrency: int, **extra) -> dict:
        arguments = self.arguments
        return {
            "concurrency": concurrency,
            "seconds": arguments.seconds,
            "warmup_seconds": arguments.warmup_seconds,
            "source": arguments.source,
            "photos": arguments.photos,
            **extra,
        }

    def closed_levels(self, server: Server, levels: list[int], into: list, label: str) -> None:
        """Measure each closed-loop concurrency level on `server`, appending each result to `into` as it comes."""
        for concurrency in levels:
            timeout = self.arguments.seconds + self.arguments.warmup_seconds + CLIENT_SLACK_S
            result = measure_load(server, "closed", self.load_options(concurrency), timeout)
            into.append(result)
            latency = result["latency_all"]
            print(
                f"{label} concurrency {concurrency}: {result['throughput_rps']} ok/s, p50 {latency['p50_ms']} ms, "
                f"p99 {latency['p99_ms']} ms, outcomes {result['outcomes']}",
                flush=True,
            )

    def serve(self, name: str, source: Path, settings: dict | None = None) -> contextlib.AbstractContextManager[Server]:
        """Start `catsdogs serve SOURCE` with `--set serve.KEY=VALUE` settings; a context manager yielding it."""
        port = free_port()
        record = self.results.setdefault("servers", {}).setdefault(name, {"settings": settings or {}})
        command = catsdogs_serve_command(source, port, settings or {})
        return started(name, command, port, self.log_dir, ready_path="/readyz", record=record)

    def closed_and_overload(self, target: dict) -> None:
        parts = self.arguments.parts
        with self.serve(f"catsdogs serve {target['label']}", target["serve"]) as server:
            if "closed" in parts:
                levels = self.results.setdefault("closed", {}).setdefault(target["label"], [])
                self.closed_levels(server, self.arguments.concurrency, levels, target["label"])
            if "overload" in parts and target["main"]:
                run_part(self, "overload", lambda: self.overload(server, target))

    def overload(self, server: Server, target: dict) -> None:
        arguments = self.arguments
        levels = self.results.get("closed", {}).get(target["label"], [])
        measured = [result for result in levels if result["throughput_rps"] > 0]
        if measured:
            best = max(measured, key=lambda result: result["throughput_rps"])
            capacity, capacity_from = best["throughput_rps"], f"closed loop, concurrency {best['concurrency']}"
        else:
            timeout = arguments.seconds + arguments.warmup_seconds + CLIENT_SLACK_S
            best = measure_load(server, "closed", self.load_options(16), timeout)
            capacity, capacity_from = best["throughput_rps"], "closed loop at concurrency 16, measured for this part"
        if capacity <= 0:
            raise RuntimeError(f"The capacity measured is {capacity} ok/s, so there is no overload rate to send.")
        rate = round(arguments.overload_factor * capacity, 2)
        timeout = arguments.seconds + OVERLOAD_REQUEST_TIMEOUT_S + CLIENT_SLACK_S
        prober = start_client(
            "probe",
            server.base_url,
            {"path": "/healthz", "seconds": arguments.seconds, "interval_ms": HEALTHZ_INTERVAL_MS},
        )
        try:
            options = {
                "rate": rate,
                "seconds": arguments.seconds,
                "max_outstanding": arguments.max_outstanding,
                "source": arguments.source,
                "photos": arguments.photos,
                "timeout_s": OVERLOAD_REQUEST_TIMEOUT_S,
            }
            load = measure_load(server, "open", options, timeout)
        finally:
            probe = finish_client(prober, timeout)
        self.results["overload"] = {
            "seconds": arguments.seconds,
            "capacity_rps": capacity,
            "capacity_from": capacity_from,
            "factor": arguments.overload_factor,
            "load": load,
            "healthz": probe,
        }
        print(
            f"overload at {rate} requests/s: outcomes {load['outcomes']}, not sent {load['not_sent']}, "
            f"healthz p99 {probe['latency_all']['p99_ms']} ms",
            flush=True,
        )

    def layouts(self) -> None:
        main = self.targets[0]
        cores = usable_cores()
        # The default is one single-threaded worker per core; the alternatives are measured beside it.
        variants = [
            ("default", {}),
            ("max_batch_size=1", {"max_batch_size": 1}),
            ("batch_wait_ms=0", {"batch_wait_ms": 0}),
        ]
        if cores > 1:
            one_worker = {"inference_workers": 1, "intra_op_threads": cores}
            variants += [
                (f"inference_workers=1, intra_op_threads={cores}", one_worker),
                (
                    f"inference_workers=1, intra_op_threads={cores}, max_batch_size=1",
                    {**one_worker, "max_batch_size": 1},
                ),
                # One worker per core, each with every core's threads: a lone photo gets them all.
                (f"inference_workers={cores}, intra_op_threads={cores}", {"intra_op_threads": cores}),
            ]
        entries = self.results.setdefault("layouts", [])
        for name, settings in variants:
            levels: list = []
            try:
                with self.serve(f"layout {name}", main["serve"], settings) as server:
                    self.closed_levels(server, self.arguments.layout_concurrency, levels, f"layout {name}")
            finally:
                entries += [{"name": name, "settings": settings, "result": result} for result in levels]

    def baseline(self) -> None:
        port = free_port()
        record = self.results.setdefault("servers", {}).setdefault("baseline", {})
        command = baseline_command(self.arguments.run, port)
        levels = self.results.setdefault("baseline", [])
        with started("baseline app", command, port, self.log_dir, ready_path="/healthz", record=record) as server:
            self.closed_levels(server, self.arguments.baseline_concurrency, levels, "baseline")

    def soak(self) -> None:
        arguments = self.arguments
        requests = arguments.soak_requests
        warmup = max(50, requests // 10)
        with self.serve("soak", self.targets[0]["serve"]) as server:
            pid = server.process.pid
            at_ready = memory(pid)
            options = {
                "concurrency": arguments.soak_concurrency,
                "source": arguments.source,
                "photos": arguments.photos,
            }
            # The first requests build thread pools and memory arenas once; the soak starts after them. The
            # timeouts are hang guards only: half a second per request is far slower than any server measured.
            measure_load(server, "closed", {**options, "requests": warmup}, CLIENT_SLACK_S + 0.5 * warmup)
            before = memory(pid)
            result = measure_load(server, "closed", {**options, "requests": requests}, CLIENT_SLACK_S + 0.5 * requests)
            after = memory(pid)
        growth = after["rss_mib"] / before["rss_mib"] - 1.0 if before and after else None
        since_ready = after["rss_mib"] / at_ready["rss_mib"] - 1.0 if at_ready and after else None
        self.results["soak"] = {
            "requests": requests,
            "warmup_requests": warmup,
            "concurrency": arguments.soak_concurrency,
            "memory_at_ready": at_ready,
            "memory_before": before,
            "memory_after": after,
            "growth": None if growth is None else round(growth, 4),
            "growth_since_ready": None if since_ready is None else round(since_ready, 4),
            "result": result,
        }
        print(f"soak: VmRSS {before} -> {after} over {requests} requests, outcomes {result['outcomes']}", flush=True)


def run_part(context: Context, name: str, part: Callable[[], None]) -> None:
    """Run one part; a failure is printed and kept under its name, and the other parts still run."""
    print(f"-- {name}", flush=True)
    try:
        part()
    except Exception as error:  # One broken part must not lose the others' numbers; the error is reported.
        traceback.print_exc(file=sys.stderr)
        context.errors[name] = f"{type(error).__name__}: {error}"[:4000]
