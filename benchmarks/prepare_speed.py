"""How fast `catsdogs prepare` validates photos, against one core doing the bare minimum.

Prepares, several times each, into fresh temporary folders:

- the seed split: `--split numbers`, 1000/500/500 per class (4,000 photos);
- the full folder: `--split all` (every photo, 10,000 in ../shared).

Each run's speed is validated images per second of wall time for the whole
`prepare_dataset` call: listing, worker start-up, read, SHA-256, full decode,
writing the split, the final flush and the manifest. In the same session, and
interleaved with those runs so that both see the same machine load, it times
the single-core baseline: one process reading, hashing and fully decoding the
same files with Pillow and writing nothing. It prints the medians and the
ratio of prepare's speed to that baseline.

Two more numbers explain the result on a given machine: "checking only" is
prepare's parallel read + hash + decode step without writing anything, and
"file creation" is how many new files with the same bytes one process can
create in a fresh folder of the scratch file system, a ceiling that no
decoder speed can lift. Outputs are deleted only at the end, because mass
deletes on a file system mounted with `discard` slow down the next run.

Usage:
    .venv/bin/python benchmarks/prepare_speed.py [--source DIR] [--runs 5] [--workers N]
"""

import argparse
import hashlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from catsdogs.data.checking import CheckJob, available_cores, check_files
from catsdogs.data.prepare import prepare_dataset
from catsdogs.data.sources import list_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402  (the shared benchmark helper beside this script)

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPOSITORY.parent / "shared" / "datasets" / "dogs-vs-cats" / "train"
SCENARIOS = {
    "seed split (numbers 1000/500/500)": {"split": "numbers"},
    "full folder (split all)": {"split": "all"},
}
SETTINGS = {
    "class_names": ["cats", "dogs"],
    "train_per_class": 1000,
    "validation_per_class": 500,
    "test_per_class": 500,
    "validation_fraction": 0.15,
    "test_fraction": 0.15,
    "seed": 42,
    "max_pixels": 50_000_000,
    "min_side": 32,
    "progress": False,
}


def baseline_rate(paths):
    """Return images/s for one process that reads, hashes and fully decodes each file (writes nothing)."""
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    return len(paths) / (time.perf_counter() - started)


def prepare_rate(source, scratch, scenario, workers):
    """Return (images/s, images checked) for one prepare run into a fresh folder under `scratch`."""
    out = Path(tempfile.mkdtemp(prefix="prepare-", dir=scratch)) / "data"
    started = time.perf_counter()
    report = prepare_dataset(source, out, workers=workers, **{**SETTINGS, **scenario})
    return report.checked / (time.perf_counter() - started), report.checked


def rerun_seconds(source, scratch, scenario, workers):
    """Return the wall time of a second, identical prepare run (which should change nothing)."""
    out = Path(tempfile.mkdtemp(prefix="rerun-", dir=scratch)) / "data"
    prepare_dataset(source, out, workers=workers, **{**SETTINGS, **scenario})
    started = time.perf_counter()
    report = prepare_dataset(source, out, workers=workers, **{**SETTINGS, **scenario})
    assert report.reused
    return time.perf_counter() - started


def checking_rate(source, paths, workers):
    """Return images/s of prepare's parallel checking step alone: read, hash, decode, no writes."""
    listing = list_source(source, SETTINGS["class_names"])
    wanted = {path.name for path in paths}
    tasks = [(index, file.member) for index, file in enumerate(listing.files) if file.relative in wanted]
    job = CheckJob(listing.root, False, SETTINGS["max_pixels"], SETTINGS["min_side"], staging_dir=None)
    started = time.perf_counter()
    check_files(job, tasks, workers=workers, progress=False)
    return len(tasks) / (time.perf_counter() - started)


def file_creation_rate(paths, scratch):
    """Return how many new files, holding these files' bytes, one process creates per second under `scratch`."""
    contents = [path.read_bytes() for path in paths]
    folder = Path(tempfile.mkdtemp(prefix="create-", dir=scratch))
    started = time.perf_counter()
    for number, data in enumerate(contents):
        descriptor = os.open(folder / f"{number}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(descriptor, data)
        os.close(descriptor)
    return len(contents) / (time.perf_counter() - started)


def seed_split_paths(source):
    return [source / f"{prefix}.{number}.jpg" for prefix in ("cat", "dog") for number in range(2000)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Kaggle-style flat folder of photos.")
    parser.add_argument("--runs", type=int, default=5, help="Runs per measurement; the median is reported.")
    parser.add_argument("--workers", type=int, default=None, help="Worker processes (default: every available core).")
    parser.add_argument("--scratch", default=None, help="Folder for the temporary outputs (default: the system's).")
    arguments = parser.parse_args(argv)
    source = arguments.source.resolve()
    if not source.is_dir():
        parser.error(f"no photos at {source}; pass --source")
    all_paths = sorted(path for path in source.iterdir() if path.is_file() and not path.name.startswith("."))
    paths_by_scenario = {
        name: seed_split_paths(source) if spec["split"] == "numbers" else all_paths for name, spec in SCENARIOS.items()
    }

    info = machine_info(packages=("tensorflow-cpu", "keras", "numpy", "pillow"))
    print(f"machine: nproc={info['nproc']}, cores available to this process={available_cores()}, cpu={info['cpu']}")
    print(f"python {info['python']}; " + ", ".join(f"{name} {version}" for name, version in info["versions"].items()))
    print(
        f"source: {source} ({len(all_paths)} files); runs per measurement: {arguments.runs}; workers: "
        f"{arguments.workers or 'all cores'}"
    )
    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")

    baseline_rate(all_paths)  # warm the page cache, so every measurement reads from memory
    scratch = Path(tempfile.mkdtemp(prefix="prepare-speed-", dir=arguments.scratch))
    print(f"scratch folder: {scratch}")
    measures = ("prepare", "baseline", "checking", "creation")
    rates = {name: {measure: [] for measure in measures} for name in SCENARIOS}
    try:
        for run in range(arguments.runs):
            for name, scenario in SCENARIOS.items():
                paths = paths_by_scenario[name]
                measured = rates[name]
                measured["baseline"].append(baseline_rate(paths))
                measured["checking"].append(checking_rate(source, paths, arguments.workers))
                measured["creation"].append(file_creation_rate(paths, scratch))
                rate, checked = prepare_rate(source, scratch, scenario, arguments.workers)
                measured["prepare"].append(rate)
                print(
                    f"  run {run + 1} {name}: prepare {rate:,.0f} images/s ({checked} checked); baseline "
                    f"{measured['baseline'][-1]:,.0f}; checking only {measured['checking'][-1]:,.0f}; file creation "
                    f"{measured['creation'][-1]:,.0f} files/s; load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        rerun = rerun_seconds(source, scratch, SCENARIOS["full folder (split all)"], arguments.workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print()
    print(
        "| scenario | images | prepare, images/s | single-core baseline, images/s | ratio | "
        "checking only, images/s | file creation, files/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in SCENARIOS:
        median = {measure: statistics.median(values) for measure, values in rates[name].items()}
        print(
            f"| {name} | {len(paths_by_scenario[name])} | {median['prepare']:,.0f} | {median['baseline']:,.0f} | "
            f"{median['prepare'] / median['baseline']:.2f} | {median['checking']:,.0f} | {median['creation']:,.0f} |"
        )
    print()
    print(
        f"Medians of {arguments.runs} runs. A second, identical run over the full folder took {rerun:.2f} s "
        f"and changed nothing."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
