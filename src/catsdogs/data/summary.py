"""What `prepare` did, as a value and as the summary table printed on the terminal."""

import dataclasses
from pathlib import Path

from catsdogs.choices import SPLITS

# The prepared folder's record of what went where; written last, so its presence means "complete".
MANIFEST_NAME = "manifest.json"

_LIST_LIMIT = 20
# Warn when the largest class of the training split has more than this many times the photos of the smallest.
IMBALANCE_LIMIT = 1.5


def imbalance_warning(counts: dict[str, int], *, weights: dict[str, float] | None = None) -> str | None:
    """Return one warning line when the classes' photo counts differ by more than `IMBALANCE_LIMIT`, else None.

    Args:
        counts: {class name: training photos}.
        weights: the class weights a run trained with ({class name: weight}), or None when it used none
            (the warning then suggests `--set train.class_weight=balanced`).
    """
    if len(counts) < 2:
        return None
    smallest = min(counts, key=counts.get)
    largest = max(counts, key=counts.get)
    if counts[smallest] == 0:
        problem = f"{smallest} has no photos in the training split"
    elif counts[largest] / counts[smallest] > IMBALANCE_LIMIT:
        ratio = counts[largest] / counts[smallest]
        problem = f"{largest} has {counts[largest]} photos, {ratio:.1f}x as many as {smallest} ({counts[smallest]})"
    else:
        return None
    if weights:
        listed = ", ".join(f"{name} {weight:.2f}" for name, weight in weights.items())
        return f"Imbalanced classes: {problem}; trained with balanced class weights ({listed})."
    return (
        f"Imbalanced classes: {problem} (more than {IMBALANCE_LIMIT}x). A model then favours the larger class; "
        "train with --set train.class_weight=balanced, or add photos of the smaller class."
    )


@dataclasses.dataclass(frozen=True)
class PrepareReport:
    """The outcome of `prepare_dataset`, built from the manifest it wrote (or found).

    Attributes:
        data_dir: the DATA folder.
        source: SOURCE, as resolved.
        split: the split mode used.
        class_names: the classes, in label order.
        counts: images written, by split and class: `counts["train"]["cats"]`.
        quarantined: (source file, reason) for every bad file.
        duplicate_groups: dicts {"split", "files"}: identical files, kept in one split.
        normalised: files re-encoded as PNG (EXIF rotation, CMYK, GIF, ...).
        skipped: files not used (not selected, not drawn, or without a class).
        ignored: hidden and system files ignored.
        checked: files fully decoded by this run (0 when nothing had to be done).
        seconds: wall time of this run.
        reused: True when DATA was already up to date and nothing changed.
    """

    data_dir: Path
    source: str
    split: str
    class_names: list
    counts: dict
    quarantined: list
    duplicate_groups: list
    normalised: int
    skipped: int
    ignored: int
    checked: int
    seconds: float
    reused: bool

    @classmethod
    def from_manifest(cls, manifest, data_dir, *, checked, seconds, reused):
        """Build a report from a manifest dict, as written by `prepare_dataset`."""
        arguments = manifest["arguments"]
        files = manifest["files"]
        return cls(
            data_dir=Path(data_dir),
            source=arguments["source"],
            split=arguments["split"],
            class_names=list(arguments["class_names"]),
            counts=manifest["counts"],
            quarantined=[(entry["source"], entry["reason"]) for entry in files if entry["status"] == "quarantined"],
            duplicate_groups=manifest["duplicate_groups"],
            normalised=sum(1 for entry in files if entry["status"] == "ok" and entry["note"]),
            skipped=sum(1 for entry in files if entry["status"] == "skipped"),
            ignored=manifest["ignored_hidden_files"],
            checked=checked,
            seconds=seconds,
            reused=reused,
        )

    @property
    def manifest_path(self):
        """Path of DATA/manifest.json."""
        return self.data_dir / MANIFEST_NAME

    @property
    def total(self):
        """Number of images written into the splits."""
        return sum(sum(by_class.values()) for by_class in self.counts.values())

    @property
    def images_per_second(self):
        """Files checked per second of wall time by this run (0 when none were)."""
        return self.checked / self.seconds if self.checked and self.seconds > 0 else 0.0

    def summary(self):
        """Return the terminal summary: a split x class table, quarantined files and duplicate groups."""
        lines = [f"Prepared {self.data_dir} from {self.source} (split: {self.split})", ""]
        lines += _table(self.counts, self.class_names)
        lines.append("")
        if self.reused:
            lines.append(
                f"Already up to date: DATA matches these arguments and SOURCE, so nothing was changed "
                f"({self.seconds:.2f} s)."
            )
        else:
            lines.append(
                f"Checked {self.checked} files in {self.seconds:.1f} s ({self.images_per_second:.0f} images/s); "
                f"{self.normalised} normalised to PNG."
            )
        lines.append(
            f"Quarantined {len(self.quarantined)}, skipped {self.skipped} (not selected or without a class), "
            f"ignored {self.ignored} hidden or system files."
        )
        if self.quarantined:
            lines += ["", f"Quarantined files ({len(self.quarantined)}), not copied:"]
            width = max(len(source) for source, _ in self.quarantined[:_LIST_LIMIT])
            lines += [f"  {source:<{width}}  {reason}" for source, reason in self.quarantined[:_LIST_LIMIT]]
            lines += _more(len(self.quarantined))
        if self.duplicate_groups:
            lines += ["", f"Duplicate groups ({len(self.duplicate_groups)}), identical bytes kept in one split:"]
            for group in self.duplicate_groups[:_LIST_LIMIT]:
                conflict = f"  (labelled {' and '.join(group['labels'])}!)" if len(group["labels"]) > 1 else ""
                lines.append(f"  {group['split']}: {' = '.join(group['files'])}{conflict}")
            lines += _more(len(self.duplicate_groups))
        warning = imbalance_warning(self.counts.get("train", {}))
        if warning:
            lines += ["", f"Warning: {warning}"]
        lines += ["", f"Manifest: {self.manifest_path}"]
        return "\n".join(lines)


def _table(counts, class_names):
    headers = ["split", *class_names, "total"]
    rows = []
    for split in SPLITS:
        by_class = counts.get(split, {})
        values = [by_class.get(name, 0) for name in class_names]
        rows.append([split, *values, sum(values)])
    totals = [sum(row[column] for row in rows) for column in range(1, len(headers))]
    rows.append(["total", *totals])
    widths = [max(len(str(row[column])) for row in [headers, *rows]) for column in range(len(headers))]

    def format_row(row):
        first = f"{row[0]:<{widths[0]}}"
        return "  ".join([first, *(f"{value:>{width}}" for value, width in zip(row[1:], widths[1:]))])

    return [format_row(headers), *(format_row(row) for row in rows)]


def _more(count):
    return [f"  ... and {count - _LIST_LIMIT} more (see manifest.json)"] if count > _LIST_LIMIT else []
