"""What `train` checks and sets up around fitting: contradictory settings, fit settings, and the run's log file."""

import contextlib
import importlib.util
import logging

from catsdogs.errors import CatsdogsError
from catsdogs.models import model_entry
from catsdogs.training.callbacks import CallbackSettings
from catsdogs.training.distribute import check_distribution_supported
from catsdogs.training.optimizers import OptimizerSettings

logger = logging.getLogger("catsdogs.training")


def check_settings(train_config, *, model_name: str) -> None:
    """Refuse contradictory training settings before anything is built.

    Args:
        train_config: the `[train]` section of the config.
        model_name: the registry name of the model to train.

    Raises:
        CatsdogsError: naming the settings that contradict each other and how to fix them.
    """
    if train_config.precision != "float32" and model_entry(model_name).pretrained:
        # Cached features come from a float32 ONNX export of the backbone; mixing formats is untested.
        raise CatsdogsError(
            "Mixed precision is for models trained from scratch; pretrained (transfer) models train in float32. "
            f"Use --set train.precision=float32. Received: train.precision={train_config.precision}, "
            f"model.name={model_name}"
        )

    if train_config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise CatsdogsError(
            "TensorBoard logging needs the tensorboard package, which is not installed. Install it with "
            "`pip install tensorboard`, or --set train.tensorboard=false. Received: train.tensorboard=true"
        )
    if train_config.reduce_lr and train_config.schedule != "constant":
        raise CatsdogsError(
            "ReduceLROnPlateau and a learning-rate schedule both want to set the learning rate. Use one: "
            "--set train.reduce_lr=false to keep the schedule, or --set train.schedule=constant. "
            f"Received: train.reduce_lr=true, train.schedule={train_config.schedule}"
        )
    check_distribution_supported(
        train_config.distribute, model_name=model_name, pretrained=model_entry(model_name).pretrained
    )


def fit_settings(train_config) -> tuple[OptimizerSettings, CallbackSettings]:
    """Return the optimizer and callback settings of the `[train]` section, for `fit.compile_model` and friends.

    Args:
        train_config: the `[train]` section of the config.

    Returns:
        (optimizer settings, callback settings).
    """
    optimizer = OptimizerSettings(
        name=train_config.optimizer,
        learning_rate=train_config.learning_rate,
        schedule=train_config.schedule,
        weight_decay=train_config.weight_decay,
        momentum=train_config.momentum,
    )
    callbacks = CallbackSettings(
        checkpoint=train_config.checkpoint,
        early_stopping=train_config.early_stopping,
        early_stopping_patience=train_config.early_stopping_patience,
        reduce_lr=train_config.reduce_lr,
        reduce_lr_factor=train_config.reduce_lr_factor,
        reduce_lr_patience=train_config.reduce_lr_patience,
        min_learning_rate=train_config.min_learning_rate,
        tensorboard=train_config.tensorboard,
    )
    return optimizer, callbacks


@contextlib.contextmanager
def log_to(path):
    """Copy the catsdogs loggers' records into the run's log file while training."""
    package_logger = logging.getLogger("catsdogs")
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    previous_level = package_logger.level
    package_logger.setLevel(logging.DEBUG)
    package_logger.addHandler(handler)
    try:
        yield
    except BaseException:
        logger.exception("Training stopped by an error; re-run the same command to resume")
        raise
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
        handler.close()
