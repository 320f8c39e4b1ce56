"""Run folders: the only code that knows the file names inside `runs/<name>/`.

A run folder carries everything needed to use a model later:

    config.json              the resolved config
    labels.json              class names in label order
    run.json                 status (training, fitted, finished), data folder, pid, times, versions
    model.keras              the best model, with model.keras.sha256 beside it
    history.csv              one row per epoch (CSVLogger)
    metrics.json             validation and test loss and accuracy; `evaluate` adds its numbers under "evaluation"
    figures/history.png      curves; figures/augmentation.png: what augmentation does
    figures/*.png            evaluation figures (confusion matrix, ROC, ...) and gradcam_NN.png examples
    figures/explain/         what `catsdogs explain` writes by default
    train.log                the run's log
    report.html              written by `catsdogs evaluate`
    abstain.json             `catsdogs evaluate`: calibration and "unsure" threshold (`runtime.answers`)
    backup/                  BackupAndRestore state while training; removed when finished
    checkpoints/             ModelCheckpoint files while training; best.json names the complete one
    tensorboard/             TensorBoard logs, when switched on
    export/<format>[-<q>]/   `catsdogs export`: the artifact (model.onnx, saved_model/, model.tflite) with its
                             .sha256, labels.json, preprocessing.json and export.json; see `ExportDir`

Every file is written to a temporary name first and moved into place with
`os.replace`, so a killed process never leaves half a file under a real name.
"""

import csv
import json
import os
import socket
import time
from pathlib import Path

from catsdogs.errors import CatsdogsError
from catsdogs.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, checksum_path, sha256_file

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"
HISTORY_FIGURE = "history.png"
AUGMENTATION_FIGURE = "augmentation.png"
LOG_FILE = "train.log"
REPORT_FILE = "report.html"
ABSTAIN_FILE = "abstain.json"
BACKUP_DIR = "backup"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = "epoch-{epoch:03d}.keras"
CHECKPOINT_COMMIT_FILE = "best.json"
TENSORBOARD_DIR = "tensorboard"
# `catsdogs export` writes RUN/export/<format>[-<quantize>]/, holding the artifact and these files.
EXPORT_DIR = "export"
# A SavedModel is a folder; its .sha256 beside it lists every file in it (`fileio.folder_manifest`).
EXPORT_ARTIFACT_FILES = {"onnx": "model.onnx", "saved_model": "saved_model", "tflite": "model.tflite"}
PREPROCESSING_FILE = "preprocessing.json"
EXPORT_RECORD_FILE = "export.json"
# `catsdogs evaluate` writes its numbers under this key of metrics.json, and these figures.
EVALUATION_KEY = "evaluation"
EVALUATION_FIGURES = {
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
    "precision_recall": "precision_recall.png",
    "calibration": "calibration.png",
    "probability_histogram": "probability_histogram.png",
    "misclassified": "misclassified.png",
    "reliability_calibrated": "reliability_calibrated.png",
    "coverage_accuracy": "coverage_accuracy.png",
    "abstained": "abstained.png",
}
GRADCAM_FIGURE_PATTERN = "gradcam_{index:02d}.png"
# `catsdogs explain` writes into figures/explain/ unless told otherwise.
EXPLAIN_DIR = "explain"
# Written by keras.callbacks.BackupAndRestore inside BACKUP_DIR.
BACKUP_METADATA_FILE = "training_metadata.json"

STATUS_TRAINING = "training"
STATUS_FITTED = "fitted"
STATUS_FINISHED = "finished"


def _process_is_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, under another user.
        return True
    return True


def _normalise(value):
    # Compare configs as JSON sees them: tuples and lists alike, ints and floats as written.
    return json.loads(json.dumps(value))


class RunDir:
    """One run folder: paths of its files, and reading and writing them safely."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    config_path = property(lambda self: self.path / CONFIG_FILE)
    labels_path = property(lambda self: self.path / LABELS_FILE)
    run_info_path = property(lambda self: self.path / RUN_FILE)
    model_path = property(lambda self: self.path / MODEL_FILE)
    model_checksum_path = property(lambda self: checksum_path(self.path / MODEL_FILE))
    history_path = property(lambda self: self.path / HISTORY_FILE)
    metrics_path = property(lambda self: self.path / METRICS_FILE)
    figures_dir = property(lambda self: self.path / FIGURES_DIR)
    history_figure_path = property(lambda self: self.path / FIGURES_DIR / HISTORY_FIGURE)
    augmentation_figure_path = property(lambda self: self.path / FIGURES_DIR / AUGMENTATION_FIGURE)
    log_path = property(lambda self: self.path / LOG_FILE)
    report_path = property(lambda self: self.path / REPORT_FILE)
    abstain_path = property(lambda self: self.path / ABSTAIN_FILE)
    backup_dir = property(lambda self: self.path / BACKUP_DIR)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINT_DIR)
    tensorboard_dir = property(lambda self: self.path / TENSORBOARD_DIR)
    explain_dir = property(lambda self: self.path / FIGURES_DIR / EXPLAIN_DIR)

    def export_dir(self, format_name: str, quantize: str = "none") -> Path:
        """The default folder of this run's export: RUN/export/<format>/, or <format>-<quantize>/ if quantized."""
        return self.path / EXPORT_DIR / (format_name if quantize == "none" else f"{format_name}-{quantize}")

    def evaluation_figure_path(self, name):
        """The path of one evaluation figure, by its key in `EVALUATION_FIGURES` ("roc", "calibration", ...)."""
        return self.figures_dir / EVALUATION_FIGURES[name]

    def gradcam_figure_path(self, number):
        """The path of the report's Grad-CAM example `number` (1-based)."""
        return self.figures_dir / GRADCAM_FIGURE_PATTERN.format(index=number)

    def gradcam_figure_paths(self):
        """The report's Grad-CAM examples that exist, in order."""
        return sorted(self.figures_dir.glob(GRADCAM_FIGURE_PATTERN.replace("{index:02d}", "*")))

    @property
    def checkpoint_pattern(self):
        """The ModelCheckpoint file path, with Keras's `{epoch}` placeholder."""
        return str(self.checkpoint_dir / CHECKPOINT_PATTERN)

    @classmethod
    def create(cls, runs_dir, *, model_name, run_name=None):
        """Create a new, empty run folder `runs_dir/<run_name>` or `runs_dir/<timestamp>-<model_name>`.

        Raises:
            CatsdogsError: if `run_name` is not a plain folder name or the folder already holds files.
        """
        runs_dir = Path(runs_dir)
        if run_name is not None:
            path = runs_dir / check_run_name(run_name)
            if path.exists() and any(path.iterdir()):
                raise CatsdogsError(
                    f"The run folder already exists and is not empty. Pick another --name or remove it. "
                    f"Received: path={path}"
                )
        else:
            stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{model_name}"
            path, number = runs_dir / stem, 2
            # Two runs started in the same second get -2, -3, ... rather than sharing a folder.
            while path.exists():
                path, number = runs_dir / f"{stem}-{number}", number + 1
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path):
        """Open an existing run folder for reading.

        Raises:
            CatsdogsError: if the folder has no config.json (not a run folder).
        """
        run_dir = cls(path)
        if not run_dir.config_path.is_file():
            raise CatsdogsError(
                f"This is not a run folder: it has no {CONFIG_FILE}. Pass a folder made by `catsdogs train`, "
                f"e.g. runs/20250101-120000-seed_cnn. Received: path={path}"
            )
        return run_dir

    @classmethod
    def find_resumable(cls, runs_dir, *, config, data_dir):
        """Return the newest unfinished run in `runs_dir` with the same config and data, or None.

        Runs whose process is still alive on this machine, or that were started on
        another machine, are never picked: they may still be training.
        """
        runs_dir = Path(runs_dir)
        if not runs_dir.is_dir():
            return None
        candidates = []
        for path in runs_dir.iterdir():
            run_dir = cls(path)
            if path.is_dir() and run_dir.is_resumable(config=config, data_dir=data_dir) and not run_dir.is_busy():
                info = run_dir.read_run_info()
                if info.get("host") == socket.gethostname():
                    candidates.append((info.get("started", ""), path.name, run_dir))
        return max(candidates, key=lambda item: item[:2])[2] if candidates else None

    def is_resumable(self, *, config, data_dir):
        """Whether this folder holds an unfinished run of the same resolved config and data folder."""
        if not (self.run_info_path.is_file() and self.config_path.is_file()):
            return False
        try:
            info = self.read_run_info()
            same_config = _normalise(self.read_config()) == _normalise(config)
        except (OSError, ValueError):
            return False
        return (
            info.get("status") != STATUS_FINISHED
            and same_config
            and info.get("data_dir") == str(Path(data_dir).resolve())
        )

    def is_busy(self):
        """Whether another live process on this machine is training in this folder now."""
        info = self.read_run_info() if self.run_info_path.is_file() else {}
        pid = info.get("pid")
        return (
            info.get("status") != STATUS_FINISHED
            and info.get("host") == socket.gethostname()
            and pid not in (None, os.getpid())
            and _process_is_alive(pid)
        )

    def write_config(self, config_dict):
        atomic_write_json(self.config_path, config_dict)

    def read_config(self):
        """Return config.json as a dict; rebuild a Config with `config.config_from_dict`."""
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_labels(self, class_names):
        atomic_write_json(self.labels_path, list(class_names))

    def read_labels(self):
        return json.loads(self.labels_path.read_text(encoding="utf-8"))

    def read_run_info(self):
        return json.loads(self.run_info_path.read_text(encoding="utf-8")) if self.run_info_path.is_file() else {}

    def update_run_info(self, **changes):
        """Merge `changes` into run.json and write it back atomically."""
        info = self.read_run_info()
        info.update(changes)
        atomic_write_json(self.run_info_path, info)
        return info

    def claim(self, *, data_dir, model_name):
        """Record that this process now trains in this folder (pid, host, data folder, status)."""
        info = self.read_run_info()
        return self.update_run_info(
            status=info.get("status", STATUS_TRAINING),
            model=model_name,
            data_dir=str(Path(data_dir).resolve()),
            pid=os.getpid(),
            host=socket.gethostname(),
            started=info.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
            attempts=info.get("attempts", 0) + 1,
        )

    def write_metrics(self, metrics):
        atomic_write_json(self.metrics_path, metrics)

    def read_metrics(self):
        return json.loads(self.metrics_path.read_text(encoding="utf-8"))

    def read_history(self):
        """Return history.csv as {column: [float per epoch]} (empty if there is none yet)."""
        if not self.history_path.is_file():
            return {}
        with open(self.history_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        columns = rows[0].keys() if rows else []
        return {
            column: [float(row[column]) if row[column] not in ("", None) else float("nan") for row in rows]
            for column in columns
        }

    def truncate_history(self, epochs):
        """Keep only the first `epochs` rows of history.csv: the epochs a resumed run will not redo."""
        if not self.history_path.is_file():
            return
        lines = self.history_path.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(lines) > epochs + 1:
            atomic_write_text(self.history_path, "".join(lines[: epochs + 1]))

    def write_figure(self, name, png_bytes):
        """Write PNG bytes (from `plots.figure_png_bytes`) to figures/<name>."""
        atomic_write_bytes(self.figures_dir / name, png_bytes)

    def backup_epoch(self):
        """Return the number of epochs BackupAndRestore has saved (0 if none)."""
        metadata = self.backup_dir / BACKUP_METADATA_FILE
        try:
            return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def commit_checkpoint(self, *, epoch, monitor_value):
        """Mark ModelCheckpoint's file for `epoch` (1-based) complete, and delete older checkpoints.

        ModelCheckpoint writes straight to its file, so a kill can leave a torn
        file; only the file named in best.json, written after the save returned,
        is ever trusted.
        """
        path = Path(self.checkpoint_pattern.format(epoch=epoch))
        atomic_write_json(
            self.checkpoint_dir / CHECKPOINT_COMMIT_FILE,
            {"file": path.name, "epoch": epoch, "monitor_value": monitor_value, "sha256": sha256_file(path)},
        )
        self.discard_uncommitted_checkpoints()

    def committed_checkpoint(self):
        """Return (path, epoch, monitor_value) of the complete best checkpoint, or None."""
        commit = self.checkpoint_dir / CHECKPOINT_COMMIT_FILE
        if not commit.is_file():
            return None
        record = json.loads(commit.read_text(encoding="utf-8"))
        path = self.checkpoint_dir / record["file"]
        if not path.is_file() or sha256_file(path) != record["sha256"]:
            return None
        return path, record["epoch"], record["monitor_value"]

    def discard_uncommitted_checkpoints(self):
        committed = self.committed_checkpoint()
        keep = committed[0].name if committed else None
        for path in self.checkpoint_dir.glob("*.keras"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    def remove_training_state(self):
        """Delete backup/ and checkpoints/ once the final model is saved."""
        import shutil

        for folder in (self.backup_dir, self.checkpoint_dir):
            shutil.rmtree(folder, ignore_errors=True)


class ExportDir:
    """One export folder (RUN/export/<format>/ or `--out`): the paths of its files.

    Args:
        path: the folder.
        format_name: the export format, which names the artifact file (see `EXPORT_ARTIFACT_FILES`).
    """

    def __init__(self, path: str | os.PathLike, *, format_name: str) -> None:
        self.path = Path(path)
        self.format_name = format_name

    artifact_path = property(lambda self: self.path / EXPORT_ARTIFACT_FILES[self.format_name])
    artifact_checksum_path = property(lambda self: checksum_path(self.artifact_path))
    labels_path = property(lambda self: self.path / LABELS_FILE)
    preprocessing_path = property(lambda self: self.path / PREPROCESSING_FILE)
    record_path = property(lambda self: self.path / EXPORT_RECORD_FILE)
    abstain_path = property(lambda self: self.path / ABSTAIN_FILE)

    def missing_files(self) -> list[str]:
        """The names of the files a complete export folder has and this one lacks, in a fixed order."""
        # The artifact may be a folder (a SavedModel); every other file is a plain file.
        missing = [] if self.artifact_path.exists() else [self.artifact_path.name]
        paths = (self.artifact_checksum_path, self.labels_path, self.preprocessing_path, self.record_path)
        return missing + [path.name for path in paths if not path.is_file()]


def check_run_name(run_name):
    """Return `run_name` if it is a plain folder name (no slashes, not hidden), else raise CatsdogsError."""
    name = str(run_name)
    if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith("."):
        raise CatsdogsError(
            f"A run name must be a plain folder name without slashes, e.g. seed-baseline. Received: name={run_name}"
        )
    return name


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a run folder (it has config.json), as opposed to a file or a folder of photos.

    Raises:
        CatsdogsError: for a folder that has run files (model, run.json, labels) but no config.json, so that a
            broken run folder is reported rather than taken for photos.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    if (folder / CONFIG_FILE).is_file():
        return True
    if any((folder / name).exists() for name in (MODEL_FILE, RUN_FILE, LABELS_FILE)):
        RunDir.open(folder)  # Raises the "not a run folder" error, naming what is missing.
    return False
