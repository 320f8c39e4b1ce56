"""Which run folder a training run uses, and what a resumed run takes back from it.

Every run folder records its resolved config, its data folder and its status
in run.json. Re-running the same command continues an interrupted run instead
of starting a new one:

- with `run_name` (`--name NAME`), the folder `runs_dir/NAME` is used; if it
  holds an unfinished run of the same config and data, training resumes there;
- without it, the newest unfinished run folder in `runs_dir` with the same
  resolved config and data folder, whose process is no longer alive on this
  machine, is resumed; if there is none, a new `<timestamp>-<model>` folder is made;
- `resume=False` (`--fresh`) always starts a new folder.

BackupAndRestore restores the weights, optimizer state and epoch; history.csv
is cut back to the epochs the backup holds, and EarlyStopping,
ReduceLROnPlateau and ModelCheckpoint get back their best value, so the
resumed run behaves as if it had not stopped. Only the data order differs:
tf.data reshuffles from its seed, so the resumed epochs see other batches
than an uninterrupted run would have.
"""

import logging
import os
from pathlib import Path

from catsdogs.errors import CatsdogsError
from catsdogs.models.saving import load_committed_checkpoint
from catsdogs.runs import STATUS_FINISHED, RunDir, check_run_name
from catsdogs.training.callbacks import ResumeState

logger = logging.getLogger("catsdogs.training")


def open_run_dir(
    runs_dir: str | os.PathLike,
    *,
    run_name: str | None,
    config_dict: dict,
    data_dir: Path,
    model_name: str,
    class_names: list[str],
    resume: bool,
) -> RunDir:
    """Return the run folder to train in, new (config and labels written) or resumed (labels checked).

    Args:
        runs_dir: the folder that holds run folders.
        run_name: the run folder's name, or None for `<timestamp>-<model>` or a resumable run.
        config_dict: the resolved config, as `Config.to_dict()` gives it.
        data_dir: the prepared data folder.
        model_name: the model's registry name, part of a new folder's name.
        class_names: the data's classes, in label order.
        resume: continue an unfinished run of the same config and data (see the module docstring).

    Raises:
        CatsdogsError: when the named folder holds a finished or different run, is busy, or is
            unfinished while `resume` is off; or when the data's classes changed since the run began.
    """
    run_dir, resumed = _select_run_dir(
        runs_dir, run_name=run_name, config_dict=config_dict, data_dir=data_dir, model_name=model_name, resume=resume
    )
    if not resumed:
        run_dir.write_config(config_dict)
        run_dir.write_labels(class_names)
    elif run_dir.read_labels() != class_names:
        raise CatsdogsError(
            f"The data's classes changed since this run started, so it cannot be resumed. Train a new run "
            f"(--fresh) or restore the data. Received: run_classes={run_dir.read_labels()}, data_classes={class_names}"
        )
    return run_dir


def _select_run_dir(runs_dir, *, run_name, config_dict, data_dir, model_name, resume):
    """Return (run_dir, resumed): the folder to train in, per the rules in the module docstring."""
    if run_name is not None:
        run_dir = RunDir(Path(runs_dir) / check_run_name(run_name))
        if not (run_dir.path.is_dir() and any(run_dir.path.iterdir())):
            return RunDir.create(runs_dir, model_name=model_name, run_name=run_name), False
        status = run_dir.read_run_info().get("status")
        if not run_dir.is_resumable(config=config_dict, data_dir=data_dir):
            reason = "a finished run" if status == STATUS_FINISHED else "a run with another config or data folder"
            raise CatsdogsError(
                f"The run folder already holds {reason}. Pick another --name, or remove the folder. "
                f"Received: path={run_dir.path}"
            )
        if run_dir.is_busy():
            raise CatsdogsError(
                f"Another process is training in this run folder now. Wait for it, or stop it first. "
                f"Received: path={run_dir.path}, pid={run_dir.read_run_info().get('pid')}"
            )
        if not resume:
            raise CatsdogsError(
                f"The run folder holds an unfinished run; it resumes without --fresh. Drop --fresh, or pick "
                f"another --name. Received: path={run_dir.path}"
            )
        return run_dir, True
    if resume:
        found = RunDir.find_resumable(runs_dir, config=config_dict, data_dir=data_dir)
        if found is not None:
            return found, True
    return RunDir.create(runs_dir, model_name=model_name), False


def take_back_epochs(run_dir: RunDir, *, checkpoint: bool, epochs: int) -> ResumeState | None:
    """Cut history.csv back to the epochs the backup holds, and return what the callbacks need to resume.

    Args:
        run_dir: the run folder about to be fitted.
        checkpoint: whether the run keeps best checkpoints (their weights go to EarlyStopping).
        epochs: the run's planned epochs, for the log.

    Returns:
        A `ResumeState`, or None when there is no backup and fitting starts from the first epoch.
    """
    resume_epoch = run_dir.backup_epoch()
    if resume_epoch <= 0:
        run_dir.truncate_history(0)
        return None
    run_dir.truncate_history(resume_epoch)
    checkpoint_model = load_committed_checkpoint(run_dir) if checkpoint else None
    logger.info("Resuming from epoch %d of %d (the backup's last complete epoch)", resume_epoch + 1, epochs)
    return ResumeState(
        epoch=resume_epoch,
        monitor_values=run_dir.read_history().get("val_loss", [])[:resume_epoch],
        best_weights=checkpoint_model.get_weights() if checkpoint_model is not None else None,
    )
