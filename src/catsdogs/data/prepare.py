"""`catsdogs prepare`: check every photo in SOURCE and copy it into DATA/{train,validation,test}/<class>/.

The steps, and why they are safe to interrupt and to repeat:

1. List SOURCE (`sources.py`) and refuse bad requests before touching anything.
2. If DATA/manifest.json records the same arguments and the same SOURCE files
   (paths, sizes, modification times) and every output is in place, stop:
   nothing is rewritten.
3. Write DATA/.prepare-in-progress.json with the arguments, so that a re-run
   after a crash recognises the partial output as its own.
4. Read, hash and fully decode every needed file on every core
   (`checking.py`), staging the clean bytes inside DATA under their SHA-256.
5. Decide the split, keeping identical files together, then move each staged
   file into place with `os.replace`. A file already there with the same
   bytes is left alone, and files that do not belong are removed (only inside
   DATA's split folders; SOURCE is never changed).
6. Write the manifest last, then remove the in-progress marker.
"""

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from catsdogs import __version__
from catsdogs.choices import SPLIT_MODES, SPLITS
from catsdogs.data.checking import CheckJob, check_files, holds_bytes, hook_delay, staging_path
from catsdogs.data.sources import SourceReader, list_source
from catsdogs.data.splitting import check_enough, plan_split, split_by_fraction, split_by_number
from catsdogs.data.summary import MANIFEST_NAME, PrepareReport
from catsdogs.errors import CatsdogsError
from catsdogs.fileio import atomic_write_bytes, atomic_write_json
from catsdogs.images import clean_image_bytes

MARKER_NAME = ".prepare-in-progress.json"
STAGING_NAME = ".prepare-staging"


def prepare_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    class_names: Sequence[str],
    split: str,
    train_per_class: int | None = None,
    validation_per_class: int | None = None,
    test_per_class: int | None = None,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    max_pixels: int,
    min_side: int,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> PrepareReport:
    """Check every photo in SOURCE and write the train/validation/test split to DATA.

    Args:
        source: Kaggle's flat folder (`cat.12.jpg`), a tree of class folders, or a .zip of either.
        out: the DATA folder to write.
        class_names: the classes, in label order.
        split: "numbers" (per class, train takes the lowest file numbers, then
            validation, then test, as in the seed), "fraction" (per class, a
            seeded random draw of train+validation+test images, or of every
            usable image when no count is given, split by the fractions) or
            "all" (every usable image, split by the fractions).
        train_per_class: train images per class ("numbers", which needs all three
            counts; with "fraction", the three counts together size the draw).
        validation_per_class: validation images per class (likewise).
        test_per_class: test images per class (likewise).
        validation_fraction: share of each class for validation ("fraction", "all").
        test_fraction: share of each class for test ("fraction", "all").
        seed: seed of the random draw ("fraction", "all").
        max_pixels: largest accepted image, width x height.
        min_side: smallest accepted image side.
        overwrite: replace a different earlier split in DATA.
        progress: show progress bars.
        workers: processes that check files; None uses every available core.

    Returns:
        A `PrepareReport`; `report.summary()` is the terminal table.

    Raises:
        CatsdogsError: for every refusal: DATA inside SOURCE, DATA holding a
            different split without `overwrite`, too few images, a class
            without images, file names without numbers in "numbers" mode,
            missing counts in "numbers" mode or only some counts in "fraction" mode.
    """
    started = time.perf_counter()
    class_names = list(class_names)
    counts = {"train": train_per_class, "validation": validation_per_class, "test": test_per_class}
    _check_arguments(split, counts, validation_fraction, test_fraction)
    # A "fraction" split without counts draws every usable image, as "all" does.
    draw_counts = counts if split == "fraction" and train_per_class is not None else None
    listing = list_source(source, class_names)
    data_dir = _check_locations(listing.root, out)
    # Only the arguments that shape the result are recorded, so that e.g. a new
    # --seed does not count as a different "numbers" split.
    arguments = {"source": str(listing.root), "class_names": class_names, "split": split}
    if split != "all":
        arguments.update({f"{name}_per_class": count for name, count in counts.items()})
    if split != "numbers":
        arguments.update(validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed)
    arguments.update(max_pixels=max_pixels, min_side=min_side)
    by_number = split_by_number(listing, class_names, counts) if split == "numbers" else None
    if draw_counts is not None:
        check_enough(listing, class_names, draw_counts)
    previous, marker = _read_json(data_dir / MANIFEST_NAME), _read_json(data_dir / MARKER_NAME)
    _refuse_other_split(data_dir, arguments, previous, marker, overwrite)
    resuming = marker is not None and marker.get("arguments") == arguments
    if (marker is None or resuming) and _is_up_to_date(data_dir, previous, arguments, listing):
        # A marker beside a complete, matching manifest means the last run was
        # killed after writing the manifest: the work is done.
        (data_dir / MARKER_NAME).unlink(missing_ok=True)
        seconds = time.perf_counter() - started
        return PrepareReport.from_manifest(previous, data_dir, checked=0, seconds=seconds, reused=True)

    atomic_write_json(data_dir / MARKER_NAME, {"arguments": arguments, "catsdogs_version": __version__})
    staging_dir = data_dir / STAGING_NAME
    # A sized "fraction" draw uses only some of the files it checks, so staging them all would waste writes.
    job = CheckJob(listing.root, listing.is_zip, max_pixels, min_side, None if draw_counts is not None else staging_dir)
    wanted = sorted(by_number) if by_number is not None else [i for i, file in enumerate(listing.files) if file.label]
    results = check_files(job, [(i, listing.files[i].member) for i in wanted], workers=workers, progress=progress)
    try:
        assignment = (
            by_number
            if by_number is not None
            else split_by_fraction(listing, results, class_names, draw_counts, validation_fraction, test_fraction, seed)
        )
        manifest, destinations = plan_split(listing, results, assignment, class_names, arguments)
    except CatsdogsError:
        # Nothing in the splits has changed yet: leave DATA as it was.
        shutil.rmtree(staging_dir, ignore_errors=True)
        if not resuming:
            (data_dir / MARKER_NAME).unlink(missing_ok=True)
        raise
    (data_dir / MANIFEST_NAME).unlink(missing_ok=True)
    _write_split(data_dir, destinations, results, listing, job, progress)
    _flush_to_disk(data_dir)
    atomic_write_json(data_dir / MANIFEST_NAME, manifest)
    (data_dir / MARKER_NAME).unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return PrepareReport.from_manifest(manifest, data_dir, checked=len(results), seconds=seconds, reused=False)


def _check_arguments(split, counts, validation_fraction, test_fraction):
    if split not in SPLIT_MODES:
        raise CatsdogsError(f"Unknown split mode. Expected one of {', '.join(SPLIT_MODES)}. Received: split={split}")
    received = ", ".join(f"{name}_per_class={count}" for name, count in counts.items())
    missing = [name for name, count in counts.items() if count is None]
    if split == "numbers" and missing:
        raise CatsdogsError(
            "The numbers split needs the train, validation and test counts per class (--train/--val/--test). "
            f"Received: {received}"
        )
    if split == "fraction" and 0 < len(missing) < len(counts):
        raise CatsdogsError(
            "A fraction split draws --train + --val + --test images per class: give all three counts, or none to "
            f"draw from every usable image. Received: {received}"
        )
    for name, count in counts.items():
        if count is not None and (not isinstance(count, int) or count < 0):
            raise CatsdogsError(
                f"The {name} count per class must be zero or a positive integer. Received: {name}_per_class={count}"
            )
    if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise CatsdogsError(
            "The validation and test fractions must each be from 0 up to 1 and leave some images for training. "
            f"Lower them. Received: validation_fraction={validation_fraction}, test_fraction={test_fraction}"
        )


def _check_locations(root, out):
    data_dir = Path(out).expanduser().resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise CatsdogsError(f"DATA must be a folder, but a file is there. Choose another --out. Received: out={out}")
    if data_dir == root or root in data_dir.parents:
        raise CatsdogsError(
            "DATA must not be SOURCE or inside it: SOURCE is read-only and the split would be listed as new photos "
            f"on the next run. Choose an --out folder outside SOURCE. Received: source={root}, out={data_dir}"
        )
    managed = [data_dir / name for name in (*SPLITS, STAGING_NAME)]
    if any(root == folder or folder in root.parents for folder in managed):
        raise CatsdogsError(
            f"SOURCE lies inside DATA's split folders, which prepare rewrites. Move SOURCE or choose another --out. "
            f"Received: source={root}, out={data_dir}"
        )
    return data_dir


def _write_split(data_dir, destinations, results, listing, job, progress):
    """Put every planned file in place and remove what does not belong in the split folders."""
    by_content = {}
    for destination, index in sorted(destinations.items()):
        by_content.setdefault(results[index].stored_sha256 + results[index].extension, []).append(destination)
    reader, delay = SourceReader(listing.root, listing.is_zip), hook_delay()
    for folder in {str(Path(destination).parent) for destination in destinations}:
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(destinations), unit="img", desc="writing", disable=not progress, dynamic_ncols=True) as bar:
        for group in by_content.values():
            result = results[destinations[group[0]]]
            pending = [d for d in group if not holds_bytes(data_dir / d, result.stored_size, result.stored_sha256)]
            staged = staging_path(job.staging_dir, result.stored_sha256, result.extension) if job.staging_dir else None
            if staged is not None and staged.is_file():
                for destination in pending[:-1]:
                    atomic_write_bytes(data_dir / destination, staged.read_bytes())
                if pending:
                    staged.replace(data_dir / pending[-1])
            elif pending:
                data = result.data
                if data is None:
                    file = listing.files[destinations[group[0]]]
                    source_bytes = reader.read(file.member)
                    data = clean_image_bytes(source_bytes, max_pixels=job.max_pixels, min_side=job.min_side).data
                for destination in pending:
                    atomic_write_bytes(data_dir / destination, data)
            if delay and pending:
                time.sleep(delay)
            bar.update(len(group))
    _remove_strays(data_dir, destinations)
    # Every class gets its folder in every used split, even if empty, so that
    # a folder-based loader sees the same classes, in the same order, everywhere.
    class_names = sorted({listing.files[index].label for index in destinations.values()})
    for split in sorted({destination.split("/")[0] for destination in destinations}):
        for class_name in class_names:
            (data_dir / split / class_name).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(data_dir / STAGING_NAME, ignore_errors=True)


def _remove_strays(data_dir, destinations):
    # Only DATA's own split folders are cleaned: leftovers of an earlier split
    # (with --overwrite) and temporary files of a killed run.
    for split in SPLITS:
        for folder, _folder_names, file_names in os.walk(data_dir / split, topdown=False):
            relative_folder = os.path.relpath(folder, data_dir).replace(os.sep, "/")
            for name in file_names:
                if f"{relative_folder}/{name}" not in destinations:
                    os.unlink(os.path.join(folder, name))
            if not os.listdir(folder):
                os.rmdir(folder)


def _flush_to_disk(data_dir):
    """Flush DATA's file system once, so that a manifest on disk implies every image is on disk too."""
    # One syncfs commits the whole split at the cost of a single journal flush;
    # fsync per file costs a flush each.
    try:
        import ctypes

        descriptor = os.open(data_dir, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).syncfs(descriptor) == 0:
                return
        finally:
            os.close(descriptor)
    except (OSError, AttributeError):
        pass
    if hasattr(os, "sync"):
        os.sync()


def _read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, OSError):
        # An unreadable record proves nothing about DATA; treat it like unknown content.
        return {"arguments": None}


def _split_folders_have_files(data_dir):
    folders = [data_dir / split for split in SPLITS if (data_dir / split).is_dir()]
    return any(path.is_file() for folder in folders for path in folder.rglob("*"))


def _refuse_other_split(data_dir, arguments, previous, marker, overwrite):
    if overwrite:
        return
    record = marker if marker is not None else previous
    if record is not None and record.get("arguments") == arguments:
        return
    if record is None and not _split_folders_have_files(data_dir):
        return
    earlier = record.get("arguments") if record is not None else None
    if isinstance(earlier, dict):
        what = "the partial output of an interrupted run" if marker is not None else "a split"
        changed = [
            f"{key}: {earlier.get(key, 'unset')!r} -> {arguments.get(key, 'unset')!r}"
            for key in sorted(set(earlier) | set(arguments))
            if earlier.get(key) != arguments.get(key)
        ]
        what = f"{what} made with different arguments ({'; '.join(changed)})"
    else:
        what = "train/validation/test files that no readable catsdogs manifest describes"
    raise CatsdogsError(
        f"DATA already holds {what}. Expected an empty DATA or one prepared with the same arguments; pass "
        f"--overwrite to replace the split, or choose another --out. Received: out={data_dir}"
    )


def _is_up_to_date(data_dir, previous, arguments, listing):
    if previous is None or previous.get("arguments") != arguments:
        return False
    if previous.get("source_fingerprint") != listing.fingerprint:
        return False
    if (data_dir / STAGING_NAME).exists():
        return False
    try:
        expected = {entry["destination"]: entry["bytes"] for entry in previous["files"] if entry["status"] == "ok"}
    except (KeyError, TypeError):
        return False  # a manifest from another version: redo the work rather than trust it
    present = {
        path.relative_to(data_dir).as_posix()
        for split in SPLITS
        if (data_dir / split).is_dir()
        for path in (data_dir / split).rglob("*")
        if path.is_file()
    }
    if present != set(expected):
        return False
    try:
        return all((data_dir / destination).stat().st_size == size for destination, size in expected.items())
    except OSError:
        return False
