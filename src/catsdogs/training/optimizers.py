"""Optimisers and learning-rate schedules, built from explicit keyword arguments.

Schedules are Keras objects saved inside the model file, so the one-cycle
schedule is a small `LearningRateSchedule` subclass registered with Keras
serialisation (no Lambda, nothing for `safe_mode` to refuse).
"""

import dataclasses
import math

import keras
from keras import ops

from catsdogs.choices import OPTIMIZERS, SCHEDULES
from catsdogs.errors import CatsdogsError


@keras.saving.register_keras_serializable(package="catsdogs")
class OneCycleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate: cosine warm-up to a peak, then cosine annealing to almost zero.

    The shape of Smith's one-cycle policy as PyTorch's `OneCycleLR` draws it:
    start at `maximal_learning_rate / initial_divisor`, rise for
    `warmup_fraction` of the steps, then fall to `start / final_divisor`.

    Args:
        maximal_learning_rate: the peak learning rate.
        total_steps: optimizer steps in the whole run (epochs x batches per epoch).
        warmup_fraction: share of the steps spent rising.
        initial_divisor: peak / starting learning rate.
        final_divisor: starting / final learning rate.
    """

    def __init__(
        self, maximal_learning_rate, total_steps, warmup_fraction=0.3, initial_divisor=25.0, final_divisor=1e4
    ):
        self.maximal_learning_rate = float(maximal_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.initial_divisor = float(initial_divisor)
        self.final_divisor = float(final_divisor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.maximal_learning_rate
        start = peak / self.initial_divisor
        end = start / self.final_divisor
        warmup_steps = max(1.0, self.total_steps * self.warmup_fraction)
        annealing_steps = max(1.0, self.total_steps - warmup_steps)
        rise = ops.clip(step / warmup_steps, 0.0, 1.0)
        fall = ops.clip((step - warmup_steps) / annealing_steps, 0.0, 1.0)
        rising = start + (peak - start) * (1.0 - ops.cos(math.pi * rise)) / 2.0
        falling = end + (peak - end) * (1.0 + ops.cos(math.pi * fall)) / 2.0
        return ops.where(step < warmup_steps, rising, falling)

    def get_config(self):
        return {
            "maximal_learning_rate": self.maximal_learning_rate,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
            "initial_divisor": self.initial_divisor,
            "final_divisor": self.final_divisor,
        }


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """What a training phase's optimizer is made of; `make_optimizer` turns it into a Keras optimizer.

    Attributes:
        name: "adam", "adamw", "rmsprop" or "sgd".
        learning_rate: the constant, starting (cosine) or peak (one-cycle) learning rate.
        schedule: "constant", "cosine" or "one_cycle".
        weight_decay: weight decay for "adamw".
        momentum: momentum for "sgd" and "rmsprop".
    """

    name: str
    learning_rate: float
    schedule: str
    weight_decay: float = 0.0
    momentum: float = 0.9

    def make_optimizer(self, *, total_steps: int) -> keras.optimizers.Optimizer:
        """Build the optimizer, its learning rate following `schedule` over `total_steps` optimizer steps.

        Raises:
            CatsdogsError: for an unknown optimizer name or schedule.
        """
        learning_rate = build_learning_rate(
            schedule=self.schedule, learning_rate=self.learning_rate, total_steps=total_steps
        )
        return build_optimizer(
            self.name, learning_rate=learning_rate, weight_decay=self.weight_decay, momentum=self.momentum
        )


def build_learning_rate(*, schedule, learning_rate, total_steps):
    """Return the optimizer's learning rate: a float, or a schedule over `total_steps` steps.

    Args:
        schedule: "constant", "cosine" (CosineDecay to zero) or "one_cycle".
        learning_rate: the constant, starting (cosine) or peak (one-cycle) learning rate.
        total_steps: optimizer steps in the whole run.

    Raises:
        CatsdogsError: for an unknown schedule.
    """
    if schedule == "constant":
        return float(learning_rate)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate, decay_steps=max(1, total_steps)
        )
    if schedule == "one_cycle":
        return OneCycleSchedule(maximal_learning_rate=learning_rate, total_steps=max(1, total_steps))
    raise CatsdogsError(
        f"Unknown learning-rate schedule. Choose one of {', '.join(SCHEDULES)} (train.schedule). "
        f"Received: schedule={schedule!r}"
    )


def build_optimizer(name, *, learning_rate, weight_decay=0.0, momentum=0.9):
    """Build a Keras optimizer.

    Args:
        name: "adam", "adamw" (decoupled weight decay), "rmsprop" or "sgd" (with momentum).
        learning_rate: a float or a `LearningRateSchedule`.
        weight_decay: weight decay for "adamw".
        momentum: momentum for "sgd" and "rmsprop".

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        CatsdogsError: for an unknown optimizer name.
    """
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate, momentum=momentum)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    raise CatsdogsError(
        f"Unknown optimizer. Choose one of {', '.join(OPTIMIZERS)} (train.optimizer). Received: optimizer={name!r}"
    )


def current_learning_rate(optimizer):
    """Return the learning rate the optimizer uses at its current step, as a float."""
    return float(ops.convert_to_numpy(optimizer.learning_rate))
