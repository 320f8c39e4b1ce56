"""Deciding `prepare`'s split: by Kaggle file number or by a seeded draw, duplicates kept together.

Every function here is pure: it looks at the source listing and the check
results and returns decisions, so the split can be tested without any I/O.
"""

import random
from pathlib import Path

from catsdogs.choices import SPLITS
from catsdogs.errors import CatsdogsError


def split_by_number(listing, class_names, counts):
    """Split as the seed did: per class, by the number in the file name.

    Per class, files are sorted by number (Kaggle's `cat.12.jpg` -> 12); the
    first `counts["train"]` go to train, the next `counts["validation"]` to
    validation and the next `counts["test"]` to test. A bad file keeps its
    place (and is quarantined later), so train is always numbers 0..N-1.

    Args:
        listing: the `SourceListing`.
        class_names: the classes.
        counts: {"train": n, "validation": n, "test": n} per class.

    Returns:
        A dict from listing index to split name, for the selected files only.

    Raises:
        CatsdogsError: when a file name has no number, or a class has fewer files than requested.
    """
    assignment = {}
    requested = sum(counts.values())
    for class_name in class_names:
        members = [i for i, file in enumerate(listing.files) if file.label == class_name]
        unnumbered = [listing.files[i].relative for i in members if listing.files[i].number is None]
        if unnumbered:
            raise CatsdogsError(
                f"The numbers split needs a number in every file name (like cat.12.jpg), but {len(unnumbered)} "
                f"files of class '{class_name}' have none. Use --split fraction or --split all for such names. "
                f"Received: split=numbers, file={unnumbered[0]}"
            )
        if requested > len(members):
            raise CatsdogsError(
                f"Class '{class_name}' has {len(members)} images in SOURCE, but --train/--val/--test ask for "
                f"{requested} ({counts['train']}+{counts['validation']}+{counts['test']}). Ask for at most "
                f"{len(members)} in total, or use --split all. Received: train_per_class={counts['train']}, "
                f"validation_per_class={counts['validation']}, test_per_class={counts['test']}"
            )
        ordered = sorted(members, key=lambda i: (listing.files[i].number, listing.files[i].relative))
        validation_start = counts["train"]
        test_start = counts["train"] + counts["validation"]
        for rank, index in enumerate(ordered[:requested]):
            assignment[index] = SPLITS[(rank >= validation_start) + (rank >= test_start)]
    return assignment


def check_enough(listing, class_names, counts, usable=None):
    """Refuse a "fraction" draw larger than a class, counting all its files or only the `usable` indices.

    Raises:
        CatsdogsError: saying how many images the class has.
    """
    requested = sum(counts.values())
    for class_name in class_names:
        available = sum(
            1 for i, file in enumerate(listing.files) if file.label == class_name and (usable is None or i in usable)
        )
        if requested > available:
            kind = "usable images after quarantine" if usable is not None else "images in SOURCE"
            raise CatsdogsError(
                f"Class '{class_name}' has {available} {kind}, but --train/--val/--test ask for {requested} to draw "
                f"from. Ask for at most {available} in total, or give none of them to draw from every usable image. "
                f"Received: train_per_class={counts['train']}, validation_per_class={counts['validation']}, "
                f"test_per_class={counts['test']}"
            )


def split_by_fraction(listing, results, class_names, counts, validation_fraction, test_fraction, seed):
    """Split by a seeded, shuffled draw per class (stratified), from the usable images only.

    Args:
        listing: the `SourceListing`.
        results: {index: CheckResult} of the checked files.
        class_names: the classes.
        counts: {"train": n, "validation": n, "test": n}: per class, draw that
            many images in total; None takes every usable image.
        validation_fraction: share of each class's drawn images for validation.
        test_fraction: share for test; train gets the rest.
        seed: the draw's seed; each class gets its own stream, so adding a class changes no other class.

    Returns:
        A dict from listing index to split name, for the drawn files only.

    Raises:
        CatsdogsError: when a class has fewer usable images than `counts` ask for.
    """
    usable = {index for index, result in results.items() if result.status == "ok"}
    if counts is not None:
        check_enough(listing, class_names, counts, usable)
    assignment = {}
    for class_name in class_names:
        members = [i for i in sorted(usable) if listing.files[i].label == class_name]
        # A string seed is hashed with SHA-512 by `random`, so the draw is the same on every machine.
        random.Random(f"{seed}:{class_name}").shuffle(members)
        drawn = members if counts is None else members[: sum(counts.values())]
        validation_count = round(len(drawn) * validation_fraction)
        test_count = round(len(drawn) * test_fraction)
        train_count = len(drawn) - validation_count - test_count
        for rank, index in enumerate(drawn):
            assignment[index] = SPLITS[(rank >= train_count) + (rank >= train_count + validation_count)]
    return assignment


def plan_split(listing, results, assignment, class_names, arguments):
    """Settle every file's split and destination, keeping identical files together, and build the manifest.

    Args:
        listing: the `SourceListing`.
        results: {index: CheckResult} of the checked files.
        assignment: {index: split} from `split_by_number` or `split_by_fraction`.
        class_names: the classes.
        arguments: the recorded arguments, stored in the manifest.

    Returns:
        (manifest dict, {destination relative to DATA: listing index}).

    Raises:
        CatsdogsError: when every selected file of a class was quarantined.
    """
    final = {i: split for i, split in assignment.items() if i in results and results[i].status == "ok"}
    for class_name in class_names:
        if not any(listing.files[i].label == class_name for i in final):
            examples = [
                f"{listing.files[i].relative}: {results[i].reason}"
                for i in assignment
                if i in results and listing.files[i].label == class_name
            ][:3]
            raise CatsdogsError(
                f"Class '{class_name}' has no usable image: every selected file was quarantined (e.g. "
                f"{'; '.join(examples)}). Replace the bad files or remove the class from data.class_names. "
                f"Received: class_name={class_name}"
            )
    groups = {}
    for index in sorted(final):
        groups.setdefault(results[index].sha256, []).append(index)
    duplicate_groups = []
    for members in groups.values():
        if len(members) > 1:
            # Identical files go to the earliest split any of them drew, so none leaks from train to test.
            earliest = min((final[i] for i in members), key=SPLITS.index)
            for index in members:
                final[index] = earliest
            labels = sorted({listing.files[i].label for i in members})
            files = [listing.files[i].relative for i in members]
            duplicate_groups.append({"split": earliest, "labels": labels, "files": files})
    destinations, taken = {}, set()
    for index in sorted(final, key=lambda i: listing.files[i].relative):
        file, result = listing.files[index], results[index]
        stem = Path(file.name_in_class.replace("/", "__")).stem
        name, attempt = f"{stem}{result.extension}", 1
        while f"{final[index]}/{file.label}/{name}".casefold() in taken:
            attempt += 1
            name = f"{stem}~{attempt}{result.extension}"
        destination = f"{final[index]}/{file.label}/{name}"
        taken.add(destination.casefold())
        destinations[destination] = index
    destination_of = {index: destination for destination, index in destinations.items()}
    entries = [_entry(file, results.get(i), i, final, destination_of) for i, file in enumerate(listing.files)]
    counts = {split: {name: 0 for name in class_names} for split in SPLITS}
    for index, split in final.items():
        counts[split][listing.files[index].label] += 1
    manifest = {
        "format": "catsdogs-prepare-manifest/1",
        "arguments": arguments,
        "source_fingerprint": listing.fingerprint,
        "layout": listing.layout,
        "counts": counts,
        "duplicate_groups": duplicate_groups,
        "ignored_hidden_files": listing.ignored,
        "files": entries,
    }
    return manifest, destinations


def _entry(file, result, index, final, destination_of):
    entry = {
        "source": file.relative,
        "destination": None,
        "label": file.label,
        "split": None,
        "sha256": None,
        "status": "skipped",
        "reason": file.skip_reason,
        "note": "",
        "bytes": None,
    }
    if result is None:
        if file.label is not None:
            entry["reason"] = "not selected: beyond the requested numbers"
        return entry
    entry["sha256"] = result.sha256 or None
    if result.status != "ok":
        entry.update(status="quarantined", reason=result.reason)
    elif index not in final:
        entry["reason"] = "not drawn for the fraction split"
    else:
        entry.update(
            status="ok",
            reason="",
            destination=destination_of[index],
            split=final[index],
            note=result.note,
            bytes=result.stored_size,
        )
    return entry
