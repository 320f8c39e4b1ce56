"""Tiny `prepare_dataset` settings and manifest readers for the prepare and splitting tests.

Imported as `tiny_prepare` (pytest puts this folder on sys.path).
"""

import json
from pathlib import Path

from catsdogs.data.prepare import prepare_dataset

SETTINGS = {
    "class_names": ["cats", "dogs"],
    "split": "numbers",
    "train_per_class": 6,
    "validation_per_class": 3,
    "test_per_class": 3,
    "validation_fraction": 0.25,
    "test_fraction": 0.25,
    "seed": 1,
    "max_pixels": 1_000_000,
    "min_side": 16,
    "progress": False,
}


def prepare(source, out, **changes):
    """Run `prepare_dataset` with `SETTINGS`, changed by `changes`; no progress bars."""
    return prepare_dataset(source, out, **{**SETTINGS, **changes})


def manifest_of(data_dir):
    """The manifest.json that prepare wrote into `data_dir`, as a dict."""
    return json.loads((Path(data_dir) / "manifest.json").read_text(encoding="utf-8"))


def entries_by_source(data_dir):
    """The manifest's file entries, by source path."""
    return {entry["source"]: entry for entry in manifest_of(data_dir)["files"]}


def files_in(folder):
    """The sorted file names in `folder`."""
    return sorted(path.name for path in Path(folder).iterdir())
