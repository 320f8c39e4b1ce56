"""`catsdogs predict` single process against `--engine ray` on a local cluster, on the same cores, side by side.

Each case is one fresh `catsdogs predict MODEL FOLDER ... --output FILE` process, so the times are what a
user waits for: Python's start-up, imports, model loading and, for Ray, starting the local cluster. The
cases run interleaved (one of each, then again) so both see the same machine load; the table gives the
median of `--repeats` and the min-max. For Ray the command's own summary line splits its wall time into
the cluster's start-up and the job itself (read, predict, write), read from its stderr.

- single process: `catsdogs predict MODEL FOLDER --format csv --output out.csv` (the export, or the run's
  engine choice);
- Ray local: `catsdogs predict MODEL FOLDER --engine ray --output out.parquet`, a local cluster with every
  CPU it may use: both cases are pinned to the same cores (`--cpus`, default the first two).

The photos are the first `--photos` of ../shared/datasets/dogs-vs-cats/train (cats and dogs alternating,
10,000 at most), linked into a temporary folder. The issue's goal: Ray at least 0.9x the single process's
photos/s. Each run appends one JSON line to benchmarks/results/ray_predict.jsonl.

Usage:
    .venv/bin/python benchmarks/ray_predict.py MODEL [--photos 10000] [--repeats 3] [--cpus 0,1|all]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, describe_machine, machine_info  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "ray_predict.jsonl"
SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
CATSDOGS = REPOSITORY / ".venv" / "bin" / "catsdogs"
# The summary line `catsdogs predict --engine ray` prints on stderr: "... wrote FILE in JOB s (cluster start START s)".
RAY_TIMES = re.compile(r" in ([0-9.]+) s \(cluster start ([0-9.]+) s\)")


def run_once(command, cpus):
    """Run `command` (pinned to `cpus` when given); return (wall seconds, stderr text)."""
    if cpus:
        command = ["taskset", "--cpu-list", cpus, *command]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False
    )
    wall = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed with exit status {result.returncode}:\n{result.stderr[-3000:]}")
    return wall, result.stderr


def compare_outputs(csv_path, parquet_path, photos):
    """Check that both engines labelled every photo alike; return {"rows", "labels_differ", "max_difference"}."""
    import csv

    import pyarrow.parquet

    with open(csv_path, encoding="utf-8", newline="") as handle:
        single = {os.path.abspath(row["file"]): row for row in csv.DictReader(handle)}
    ray_rows = {row["file"]: row for row in pyarrow.parquet.read_table(parquet_path).to_pylist()}
    if len(ray_rows) != photos or set(ray_rows) != set(single):
        raise SystemExit(
            f"the engines wrote different rows: single {len(single)}, Ray {len(ray_rows)}, photos {photos}"
        )
    differ = sum(row["label"] != (single[file]["label"] or None) for file, row in ray_rows.items())
    worst = max(
        (
            abs(row["probability"] - float(single[file]["probability"]))
            for file, row in ray_rows.items()
            if row["label"]
        ),
        default=0.0,
    )
    print(f"both engines: {photos} rows, {differ} labels differ, largest probability difference {worst:.1g}")
    return {"rows": photos, "labels_differ": differ, "max_difference": worst}


def default_cpus():
    """The first two cores this process may use, as a taskset list ("0,1")."""
    return ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0))[:2])


def photo_list(count):
    """The first `count` photos of the shared folder, a cat and a dog in turn."""
    photos = [SOURCE / f"{label}.{number}.jpg" for number in range(5000) for label in ("cat", "dog")]
    photos = [photo for photo in photos[:count] if photo.is_file()]
    if len(photos) < count:
        raise SystemExit(f"only {len(photos)} of {count} photos found in {SOURCE}")
    return photos


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an ONNX export folder, or a run folder")
    # Timings are for a quiet machine; check the script with a small --photos and --results elsewhere.
    parser.add_argument("--photos", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--cpus",
        default=default_cpus(),
        help="pin both cases to these cores (taskset --cpu-list); 'all' pins nothing. Default: the first two "
        "cores this process may use, the issue's setting",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="the JSON lines file to append to")
    arguments = parser.parse_args()

    arguments.cpus = None if arguments.cpus == "all" else arguments.cpus
    photos = photo_list(arguments.photos)
    print(describe_machine(packages=("tensorflow-cpu", "keras", "numpy", "pillow", "onnxruntime", "ray", "pyarrow")))
    results = {"single process": [], "ray local": []}
    ray_times = []
    with tempfile.TemporaryDirectory(prefix="catsdogs-ray-benchmark-") as folder:
        batch_dir = Path(folder) / "photos"
        batch_dir.mkdir()
        for photo in photos:
            (batch_dir / photo.name).symlink_to(photo)
        common = [str(CATSDOGS), "predict", str(arguments.model), str(batch_dir), "--batch-size"]
        cases = {
            "single process": [*common, str(arguments.batch_size), "--format", "csv", "--output", f"{folder}/o.csv"],
            "ray local": [*common, str(arguments.batch_size), "--engine", "ray", "--output", f"{folder}/o.parquet"],
        }
        for repeat in range(arguments.repeats):
            for name, command in cases.items():
                wall, stderr = run_once(command, arguments.cpus)
                results[name].append(wall)
                if name == "ray local":
                    match = RAY_TIMES.search(stderr)
                    ray_times.append([float(match.group(2)), float(match.group(1))] if match else None)
                print(f"repeat {repeat + 1}: {name}: {wall:.1f} s", flush=True)
        agreement = compare_outputs(Path(folder) / "o.csv", Path(folder) / "o.parquet", len(photos))

    print(f"\nmedian of {arguments.repeats} interleaved runs, {len(photos)} photos, model {arguments.model}")
    print("| case | wall s (min-max) | photos/s |")
    print("|---|---:|---:|")
    summary = {}
    for name, walls in results.items():
        wall = statistics.median(walls)
        summary[name] = {"walls": walls, "median_s": wall, "photos_per_s": len(photos) / wall}
        print(f"| {name} | {wall:.1f} ({min(walls):.1f}-{max(walls):.1f}) | {len(photos) / wall:.1f} |")
    ratio = summary["ray local"]["photos_per_s"] / summary["single process"]["photos_per_s"]
    print(f"\nRay local / single process throughput: {ratio:.2f}x (goal: at least 0.9x)")
    known = [times for times in ray_times if times]
    if known:
        start = statistics.median(times[0] for times in known)
        job = statistics.median(times[1] for times in known)
        print(
            f"Ray: cluster start-up {start:.1f} s, job {job:.1f} s ({len(photos) / job:.1f} photos/s without start-up)"
        )
    record = {
        "benchmark": "ray_predict",
        "machine": machine_info(packages=("numpy", "pillow", "onnxruntime", "ray", "pyarrow")),
        "model": str(arguments.model),
        "photos": len(photos),
        "repeats": arguments.repeats,
        "batch_size": arguments.batch_size,
        "cpus": arguments.cpus or f"all {len(os.sched_getaffinity(0))}",
        "cases": summary,
        "ray_cluster_start_and_job_s": ray_times,
        "ray_over_single_throughput": ratio,
        "agreement": agreement,
    }
    append_jsonl(arguments.results, record)


if __name__ == "__main__":
    main()
