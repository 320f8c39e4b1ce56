"""Load benchmark of `catsdogs serve` (issue 11): latency, throughput, overload, memory, against floor and ceiling.

Everything runs in one invocation, side by side, on real photos of real sizes
(../shared/datasets/dogs-vs-cats-original-sample) and real processes on
127.0.0.1 with free ports:

- floor: in this process, no HTTP: decode + resize + one batch-1 model call per photo, median of 50;
- ceiling: in this process, photos/s of decode + model at each batch size and worker layout; the best;
- closed: a `catsdogs serve` of the run (its default settings), closed loops at each `--concurrency`
  for `--seconds` each: throughput, p50/p95/p99, error rate, the load generator's CPU share;
- overload: open loop at 4x the capacity measured in `closed` (the best ok/s): the share of 503s, the
  p99 of the admitted requests, the p99 of the 503s, and /healthz p99 from a prober of its own;
- soak: a fresh server's VmRSS before and after `--soak-requests` requests (after a warm-up of a tenth);
- baseline: a FastAPI app calling `catsdogs.inference.Predictor` once per request (serve_baseline_app.py);
- layouts: micro-batching (default max_batch_size against 1, batch_wait_ms 0) and worker layouts (one
  worker with every thread against one single-thread worker per core), closed loop at concurrency 16.

With `--export DIR` (e.g. RUN/export/onnx-int8) the floor, ceiling and closed
parts also run on that export, served directly. The load generator
(serve_load_client.py) is an httpx asyncio client in a process of its own. The
tables are printed, and one JSON line per invocation is appended to
benchmarks/results/serve_load.jsonl with the machine, versions and commit.

Usage:
    .venv/bin/python benchmarks/serve_load.py [RUN] [--parts floor,ceiling,closed,overload,soak,baseline,layouts]
        [--seconds 30] [--concurrency 1,4,16,64] [--export RUN/export/onnx-int8] [--soak-requests 10000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import append_jsonl, machine_info  # noqa: E402  (the shared benchmark helpers beside this script)
from serve_load_client import DEFAULT_SOURCE, select_photos  # noqa: E402
from serve_load_local import default_layouts, measure_ceiling, measure_floor, usable_cores  # noqa: E402
from serve_load_parts import Context, run_part  # noqa: E402
from serve_load_report import check_goals, print_report  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "serve_load.jsonl"
PARTS = ("floor", "ceiling", "closed", "overload", "soak", "baseline", "layouts")
PACKAGES = ("numpy", "pillow", "onnxruntime", "fastapi", "uvicorn", "starlette", "httpx", "tensorflow-cpu", "keras")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def comma_list(text: str, kind: Callable[[str], object] = str) -> list:
    """Parse "a,b,c" into a list, each converted with `kind`."""
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line and fill in the defaults that depend on --quick."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run folder (default: the newest runs/*/ with model.keras)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--seconds", type=float, help="measured seconds per load level (default 30; --quick 3)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="closed-loop levels, comma-separated")
    parser.add_argument("--export", type=Path, help="an export folder (e.g. RUN/export/onnx-int8) to measure too")
    parser.add_argument("--soak-requests", type=int, help="requests of the soak (default 10000; --quick 300)")
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--baseline-concurrency", default="1,16", help="closed-loop levels of the baseline app")
    parser.add_argument("--layout-concurrency", default="16", help="closed-loop levels of the layouts part")
    parser.add_argument("--ceiling-seconds", type=float, help="seconds per ceiling case (default 10; --quick 2)")
    parser.add_argument("--batch-sizes", help="ceiling batch sizes (default 1,2,4,8; --quick 1,8)")
    parser.add_argument("--floor-repeats", type=int, default=50, help="timed photos of the floor")
    parser.add_argument("--overload-factor", type=float, default=4.0, help="overload rate over the capacity")
    parser.add_argument("--max-outstanding", type=int, default=512, help="overload: most requests in flight")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of real .jpg photos")
    parser.add_argument("--photos", type=int, default=200, help="photos to cycle through")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="JSON-lines file to append to")
    parser.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    arguments = parser.parse_args(argv)
    arguments.parts = comma_list(arguments.parts)
    unknown = [part for part in arguments.parts if part not in PARTS]
    if unknown:
        parser.error(f"--parts takes {', '.join(PARTS)}. Received: parts={','.join(unknown)}")
    quick = arguments.quick
    arguments.seconds = arguments.seconds or (3.0 if quick else 30.0)
    arguments.warmup_seconds = 1.0 if quick else 3.0
    arguments.soak_requests = arguments.soak_requests or (300 if quick else 10_000)
    arguments.ceiling_seconds = arguments.ceiling_seconds or (2.0 if quick else 10.0)
    arguments.batch_sizes = comma_list(arguments.batch_sizes or ("1,8" if quick else "1,2,4,8"), int)
    for name in ("concurrency", "baseline_concurrency", "layout_concurrency"):
        setattr(arguments, name, comma_list(getattr(arguments, name), int))
    arguments.run = arguments.run or newest_run(REPOSITORY / "runs")
    if not (arguments.run / "model.keras").is_file():
        parser.error(
            f"the run folder has no model.keras; pass a run made by `catsdogs train`. Received: run={arguments.run}"
        )
    # Fails at once, naming the folder, when --source holds no photos.
    select_photos(arguments.source, 1)
    return arguments


def newest_run(runs: Path) -> Path:
    """The newest run folder with a model.keras (by name: run folders start with their date and time).

    Raises:
        SystemExit: when there is none, saying how to make one.
    """
    found = sorted(path.parent for path in runs.glob("*/model.keras"))
    if not found:
        raise SystemExit(f"No run folder with a model.keras under {runs}. Run `make demo` or pass RUN.")
    return found[-1]


def cpu_flags() -> list[str]:
    """The instruction-set flags that matter to ONNX Runtime's float32 and int8 kernels, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [flag for flag in CPU_FLAGS if flag in flags]


def git_state() -> dict:
    """The full commit and whether the working tree had changes (then the numbers are not the commit's alone)."""

    def git(*arguments: str) -> str:
        result = subprocess.run(["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def resolve_targets(arguments: argparse.Namespace) -> list[dict]:
    """The models to measure: the run (served as a run folder, through its ONNX export) and `--export`, if given.

    The run's export is made first here when missing or stale (`catsdogs export` in a child process), so no
    server start-up includes it.
    """
    from catsdogs.runtime import read_export
    from catsdogs.service.model import resolve_source

    source = resolve_source(arguments.run, progress=print)
    targets = [{"label": "float32", "serve": arguments.run, "export_dir": source.export_dir, "main": True}]
    if arguments.export:
        precision = read_export(arguments.export, format_name="onnx").precision
        label = precision if precision != "float32" else f"float32 ({arguments.export.name})"
        targets.append({"label": label, "serve": arguments.export, "export_dir": arguments.export, "main": False})
    return targets


def main() -> None:
    arguments = parse_arguments()
    info = machine_info(packages=PACKAGES)
    info.update(cpu_flags=cpu_flags(), usable_cores=usable_cores(), git=git_state())
    machine_line = (
        f"{info['cpu']} ({info['nproc']} cores, flags {' '.join(info['cpu_flags'])}), load {info['load_average_1min']}"
        f" at start, commit {info['git']['commit'][:10]}{' (with changes)' if info['git']['dirty'] else ''}"
    )
    print(f"serve_load: {machine_line}", flush=True)
    targets = resolve_targets(arguments)
    photos = [path.read_bytes() for path in select_photos(arguments.source, arguments.photos)]
    log_dir = Path(tempfile.mkdtemp(prefix="serve_load-"))
    print(f"serve_load: server logs in {log_dir}", flush=True)
    results: dict = {}
    errors: dict = {}
    context = Context(arguments, targets, log_dir, results, errors)
    started = time.time()
    for target in targets:
        if "floor" in arguments.parts:
            run_part(context, f"floor:{target['label']}", lambda t=target: _floor(context, t, photos))
        if "ceiling" in arguments.parts:
            run_part(context, f"ceiling:{target['label']}", lambda t=target: _ceiling(context, t, photos))
    context.run_servers()
    info["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    record = {
        "benchmark": "serve_load",
        "run": str(arguments.run),
        "export": str(arguments.export) if arguments.export else None,
        "targets": [{"label": t["label"], "export_dir": str(t["export_dir"])} for t in targets],
        "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(arguments).items()},
        "machine": info,
        "machine_line": machine_line,
        "seconds_total": round(time.time() - started, 1),
        "results": results,
        "errors": errors,
        "goals": check_goals(results),
    }
    print_report(record)
    append_jsonl(arguments.results, record, sort_keys=True)
    print(f"\nserve_load: appended to {arguments.results}; server logs in {log_dir}")
    if errors:
        sys.exit(1)


def _floor(context: Context, target: dict, photos: list[bytes]) -> None:
    floor = measure_floor(target["export_dir"], photos, repeats=context.arguments.floor_repeats)
    context.results.setdefault("floor", {})[target["label"]] = floor
    print(f"floor {target['label']}: median {floor['median_ms']} ms", flush=True)


def _ceiling(context: Context, target: dict, photos: list[bytes]) -> None:
    arguments = context.arguments
    ceiling = measure_ceiling(
        target["export_dir"],
        photos,
        batch_sizes=arguments.batch_sizes,
        layouts=default_layouts(usable_cores()),
        seconds=arguments.ceiling_seconds,
        warmup_s=min(1.0, arguments.ceiling_seconds),
    )
    context.results.setdefault("ceiling", {})[target["label"]] = ceiling
    print(
        f"ceiling {target['label']}: {ceiling['photos_per_s']} photos/s ({ceiling['best']['layout']}, "
        f"batch {ceiling['best']['batch_size']})",
        flush=True,
    )


if __name__ == "__main__":
    main()
