"""The model registry: a name maps to a builder, one file per model family.

A family module in this package registers its builders with `@register("name")`.
Every module of the package is imported the first time the registry is
asked for anything, so a new family only has to add a file:

    @register("my_net", last_conv_layer="conv_last")
    def build_my_net(*, input_shape, num_classes, dropout_rate, weights):
        ...
        return keras.Model(inputs, outputs, name="my_net")

A builder takes keyword arguments only and returns an uncompiled `keras.Model`
that takes raw float pixels in 0..255 and ends in `classifier_head`. Builders
registered with `pretrained=True` receive `weights="imagenet"` or None; the
others always receive None. A weights file path is loaded here, after building,
for every family alike.

`register(name, ...)(builder)` adds a builder without the decorator syntax, and
`unregister(name)` removes it again, e.g. a test stand-in.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from catsdogs.errors import CatsdogsError

if TYPE_CHECKING:
    import keras

# A builder takes keyword arguments only (input_shape, num_classes, dropout_rate, weights).
# Keras is named as a string so that importing the registry does not import Keras.
Builder = Callable[..., "keras.Model"]

WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registry entry.

    Attributes:
        name: the name users pass to `--model`.
        builder: the function that builds the model.
        pretrained: whether the builder can start from ImageNet weights.
        last_conv_layer: name of the last convolutional feature map, for Grad-CAM.
        description: one line for `catsdogs train --help`, from the builder's docstring.
    """

    name: str
    builder: Builder
    pretrained: bool
    last_conv_layer: str | None
    description: str


_REGISTRY = {}
_families_imported = False


def register(
    name: str, *, pretrained: bool = False, last_conv_layer: str | None = None
) -> Callable[[Builder], Builder]:
    """Return a decorator that adds a model builder to the registry under `name`.

    Args:
        name: the model name, e.g. "seed_cnn".
        pretrained: whether the builder accepts `weights="imagenet"`.
        last_conv_layer: name of the layer whose output Grad-CAM explains.

    Returns:
        The decorator; it registers the builder and returns it unchanged.

    Raises:
        CatsdogsError: when the decorator is applied, if another builder already holds the name.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise CatsdogsError(
                f"Two model builders claim the same name. Give each family its own names. Received: name={name}"
            )
        summary = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            pretrained=pretrained,
            last_conv_layer=last_conv_layer,
            description=summary[0] if summary else "",
        )
        return builder

    return decorator


def unregister(name: str) -> None:
    """Remove the builder registered under `name`, e.g. a stand-in a test registered for itself.

    Args:
        name: a name from `available_models()`.

    Raises:
        CatsdogsError: for an unknown name, listing the known ones.
    """
    model_entry(name)
    del _REGISTRY[name]


def _import_families():
    # Importing a family module runs its @register decorators.
    global _families_imported
    if _families_imported:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    # Only once every family imported: a failed import (no Keras) must fail again, not leave an empty registry.
    _families_imported = True


def available_models() -> list[str]:
    """Return the registered model names, sorted."""
    _import_families()
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """Return the `ModelEntry` registered under `name`.

    Args:
        name: a name from `available_models()`.

    Returns:
        The entry: builder, whether it is pretrained, its Grad-CAM layer and description.

    Raises:
        CatsdogsError: for an unknown name, listing the known ones.
    """
    _import_families()
    if name not in _REGISTRY:
        import difflib

        matches = difflib.get_close_matches(name, _REGISTRY, n=1)
        suggestion = f" Did you mean '{matches[0]}'?" if matches else ""
        raise CatsdogsError(
            f"Unknown model.{suggestion} Choose one of: {', '.join(sorted(_REGISTRY))} "
            f"(set model.name or pass --model). Received: name={name}"
        )
    return _REGISTRY[name]


def build_model(
    name: str,
    *,
    input_shape: Sequence[int | None],
    num_classes: int,
    dropout_rate: float = 0.5,
    weights: str | os.PathLike | None = None,
) -> keras.Model:
    """Build a registered model.

    Args:
        name: a name from `available_models()`.
        input_shape: (height, width, channels) of the raw-pixel input.
        num_classes: number of classes; 2 gives one sigmoid output, more give softmax.
        dropout_rate: dropout before the classifier head.
        weights: None or "none" for random weights, "imagenet" for the family's
            pretrained weights (ignored by families that have none), or a path to
            a `.weights.h5` file saved from the same model.

    Returns:
        An uncompiled `keras.Model`.

    Raises:
        CatsdogsError: for an unknown name, fewer than two classes or a missing weights file.
    """
    entry = model_entry(name)
    if num_classes < 2:
        raise CatsdogsError(
            f"A classifier needs at least two classes. Check the class folders. Received: num_classes={num_classes}"
        )
    weights_path = None
    if weights in (None, WEIGHTS_NONE):
        builder_weights = None
    elif weights == WEIGHTS_IMAGENET:
        # From-scratch families have no pretrained weights; the config default
        # names what transfer families use, so it is not an error here.
        builder_weights = WEIGHTS_IMAGENET if entry.pretrained else None
    else:
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise CatsdogsError(
                f"The weights file does not exist. Expected 'imagenet', 'none' or a path to a .weights.h5 file "
                f"(set model.weights). Received: weights={weights}"
            )
        builder_weights = None
    model = entry.builder(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        dropout_rate=dropout_rate,
        weights=builder_weights,
    )
    if weights_path is not None:
        model.load_weights(weights_path)
    return model


def classifier_head(x, *, num_classes, name="predictions"):
    """Apply the output layer: one sigmoid unit for two classes, a softmax over classes otherwise.

    Args:
        x: the feature tensor.
        num_classes: number of classes.
        name: the layer's name, which later code looks up.

    Returns:
        The probabilities tensor, in float32.
    """
    from keras import layers

    # float32 whatever the global policy: probabilities and the loss need full precision.
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", name=name, dtype="float32")(x)
    return layers.Dense(num_classes, activation="softmax", name=name, dtype="float32")(x)
