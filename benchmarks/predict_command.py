"""`catsdogs predict` as a user runs it, whole command: wall time and peak memory, run folder against exports.

Each case is one fresh `catsdogs predict ... --format csv --output FILE` process, so the times include
Python's start-up, imports and model loading, as a user sees them. Cases run interleaved (one of each,
then again) so that all see the same machine load; the table gives the median of `--repeats` and the
min-max. Peak memory is the child's maximum resident set size (`getrusage(RUSAGE_CHILDREN)` per
process, read through `os.wait4`).

- one photo: the run folder (Keras, `--engine keras` if the command has the option, else its only path),
  the run folder's automatic engine, and each export folder given;
- a batch of `--photos` real photos (Kaggle numbers 2000 and up of the shared folder, never the seed
  split's), the same cases.

An export folder can also be run with another virtualenv's `catsdogs` (`--runtime-venv DIR`), e.g. one
made with the base install only (`python -m venv .venv-runtime && .venv-runtime/bin/pip install .`), to
show what the TensorFlow-free install costs.

Usage:
    .venv/bin/python benchmarks/predict_command.py RUN [--export DIR ...] [--runtime-venv DIR]
        [--photos 1000] [--repeats 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append_jsonl, describe_machine, machine_info  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPOSITORY / "benchmarks" / "results" / "predict_command.jsonl"
SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
CATSDOGS = REPOSITORY / ".venv" / "bin" / "catsdogs"


def run_once(command):
    """Run `command`; return (wall seconds, peak resident MiB, exit status)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, command))} failed with exit status {code}:\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, code


def engine_option_exists():
    """True if `catsdogs predict` has `--engine` (the run-folder fast path)."""
    help_text = subprocess.run([str(CATSDOGS), "predict", "--help"], capture_output=True, text=True).stdout
    return "--engine" in help_text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--export", type=Path, action="append", default=[], help="an export folder (repeatable)")
    parser.add_argument("--runtime-venv", type=Path, help="a virtualenv with the base install only")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()

    photos = [SOURCE / f"{label}.{number}.jpg" for number in range(2000, 5000) for label in ("cat", "dog")]
    photos = photos[: arguments.photos]
    with tempfile.TemporaryDirectory() as folder:
        batch_dir = Path(folder) / "photos"
        batch_dir.mkdir()
        for photo in photos:
            (batch_dir / photo.name).symlink_to(photo)
        output = Path(folder) / "out.csv"
        cases = {}
        if engine_option_exists():
            cases["run folder, --engine keras"] = [
                str(CATSDOGS),
                "predict",
                str(arguments.run_dir),
                "--engine",
                "keras",
            ]
            cases["run folder, automatic engine"] = [str(CATSDOGS), "predict", str(arguments.run_dir)]
        else:
            cases["run folder (Keras)"] = [str(CATSDOGS), "predict", str(arguments.run_dir)]
        for export in arguments.export:
            cases[f"export {export.name}"] = [str(CATSDOGS), "predict", str(export)]
            if arguments.runtime_venv:
                runtime = arguments.runtime_venv / "bin" / "catsdogs"
                cases[f"export {export.name}, base install"] = [str(runtime), "predict", str(export)]
        tails = {"one photo": [str(photos[0])], f"{len(photos)} photos": [str(batch_dir)]}
        print(describe_machine())
        results = {}
        for _ in range(arguments.repeats):
            for workload, tail in tails.items():
                for name, command in cases.items():
                    # The photos right after the folder: argparse takes no more photos after an option.
                    full = [*command[:3], *tail, *command[3:], "--format", "csv", "--output", str(output)]
                    wall, memory, _ = run_once(full)
                    results.setdefault((workload, name), []).append((wall, memory))
        shutil.rmtree(batch_dir)
    print(f"\nmedian of {arguments.repeats} interleaved runs; run {arguments.run_dir}")
    print("| workload | case | wall s (min-max) | photos/s | peak memory MiB |")
    print("|---|---|---:|---:|---:|")
    record = {"machine": machine_info(), "run": str(arguments.run_dir), "repeats": arguments.repeats, "cases": []}
    for (workload, name), values in results.items():
        walls = [wall for wall, _ in values]
        memory = statistics.median(memory for _, memory in values)
        count = 1 if workload == "one photo" else len(photos)
        wall = statistics.median(walls)
        print(
            f"| {workload} | {name} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {count / wall:.1f} | "
            f"{memory:.0f} |"
        )
        record["cases"].append({"workload": workload, "case": name, "walls": walls, "peak_mib": memory})
    append_jsonl(RESULTS_FILE, record)


if __name__ == "__main__":
    main()
