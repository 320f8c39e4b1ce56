"""Grad-CAM heatmaps and feature maps as arrays, no plotting.

Works for Sequential models, Functional models and transfer models whose
backbone is a nested model. Keras Grad-CAM recipes build
`keras.Model(model.inputs, model.get_layer(...).output)`; for a layer inside a
nested backbone that fails with "Graph disconnected", because the layer's
output belongs to the backbone's own graph, not the outer one. Here the model
is re-wired instead: the outer graph is replayed with the same layers (shared
weights, nothing copied), and where it calls a nested model that holds a
wanted layer, it calls a probe of that nested model which also returns the
wanted activations. The probe is built the same way, so any depth of nesting works.
"""

import keras
import numpy
import tensorflow as tf
from keras import layers

from catsdogs.errors import CatsdogsError

CONVOLUTION_TYPES = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)
# Layers that only shrink or thin out a feature map. Grad-CAM reads the map just
# before them, where it is still at its finest and its last nonlinearity is applied.
REDUCING_TYPES = (layers.MaxPooling2D, layers.AveragePooling2D, layers.Dropout, layers.SpatialDropout2D)
PROBABILITY_ACTIVATIONS = ("sigmoid", "softmax")


def spatial_layers(model, prefix=""):
    """List the layers with a (batch, height, width, channels) output, nested models included.

    Returns:
        [(path, layer)] in the model's order; a nested layer's path is
        "backbone_name/layer_name".
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if _output_rank(layer) == 4:
            found.append((path, layer))
        if isinstance(layer, keras.Model):
            found.extend(spatial_layers(layer, prefix=f"{path}/"))
    return found


def _output_rank(layer):
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        # A layer that was never called, or called more than once, has no single output.
        return None


def convolution_layers(model):
    """List the convolution layers as [(path, layer)], nested models included."""
    return [(path, layer) for path, layer in spatial_layers(model) if isinstance(layer, CONVOLUTION_TYPES)]


def default_gradcam_layer(model):
    """Return the path of the last convolutional feature map: the layer Grad-CAM explains by default.

    That is the last layer with a spatial output that is not a pooling or dropout
    layer, so the BatchNorm and activation after the last convolution are
    included (seed CNN: "conv2d_block3"; with BatchNorm: "relu_block3"; an
    EfficientNet backbone: "top_activation").

    Raises:
        CatsdogsError: if the model has no convolution layer.
    """
    candidates = spatial_layers(model)
    if not any(isinstance(layer, CONVOLUTION_TYPES) for _, layer in candidates):
        raise CatsdogsError(
            "Grad-CAM needs a convolutional layer, and this model has none. Use a convolutional model. "
            f"Received: model={model.name}"
        )
    for path, layer in reversed(candidates):
        # A nested model's own entry comes before its layers; its inner layers are the precise choice.
        if not isinstance(layer, (REDUCING_TYPES, keras.Model)):
            return path
    return candidates[-1][0]


def resolve_layer(model, name):
    """Find a spatial layer by name or by "nested_model/name" path.

    Returns:
        (path, layer).

    Raises:
        CatsdogsError: if no layer with a 4-D output has that name; the message lists the valid ones.
    """
    candidates = spatial_layers(model)
    for path, layer in candidates:
        if name == path or name == layer.name:
            return path, layer
    raise CatsdogsError(
        f"Layer '{name}' is not a layer with a spatial (batch, height, width, channels) output in model "
        f"'{model.name}'. Pass one of these to --layer: {', '.join(path for path, _ in candidates)}. "
        f"Received: layer={name}"
    )


def _output_layer(model):
    return model.layers[-1] if model.layers else None


def build_probe(model, wanted_layers):
    """Build a model returning [model output, output layer's input, *wanted activations].

    The same layer objects are called on new inputs, so weights are shared and
    nothing is trained or copied.

    Args:
        model: a built Sequential or Functional model.
        wanted_layers: layers (at any nesting depth) whose outputs to return, in order.

    Returns:
        A `keras.Model`.
    """
    wanted = {id(layer) for layer in wanted_layers}
    captured = {}
    output_layer = _output_layer(model)

    def call_layer(layer, *arguments, **keyword_arguments):
        inside = [item for item in wanted_layers if item is not layer and _contains_layer(layer, item)]
        if inside:
            # Call a probe of the nested model instead, so its inner activations join this graph.
            results = build_probe(layer, inside)(*arguments, **keyword_arguments)
            output = results[0]
            captured.update({id(item): activation for item, activation in zip(inside, results[2:])})
        else:
            output = layer(*arguments, **keyword_arguments)
        if layer is output_layer:
            captured["head_input"] = arguments[0]
        if id(layer) in wanted:
            captured[id(layer)] = output
        return output

    if isinstance(model, keras.Sequential):
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
        outputs = inputs
        # A Sequential model is a chain, so replaying it is calling each layer on the last output.
        for layer in model.layers:
            outputs = call_layer(layer, outputs)
    else:
        replayed = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_layer)
        inputs, outputs = replayed.input, replayed.outputs[0]
    missing = [layer.name for layer in wanted_layers if id(layer) not in captured]
    if missing:
        raise CatsdogsError(
            f"These layers are not reached when model '{model.name}' runs, so they cannot be read. "
            f"Pick layers from the model's forward path. Received: layers={missing}"
        )
    ordered = [captured[id(layer)] for layer in wanted_layers]
    return keras.Model(inputs, [outputs, captured.get("head_input", outputs), *ordered], name=f"{model.name}_probe")


def _contains_layer(model, target):
    if not isinstance(model, keras.Model):
        return False
    for layer in model.layers:
        if layer is target or (isinstance(layer, keras.Model) and _contains_layer(layer, target)):
            return True
    return False


def _class_scores(model, output, head_input):
    """Return pre-activation class scores (logits) when the output layer allows it, else log-probabilities.

    Gradients of a saturated sigmoid or softmax vanish; the logits' do not.
    """
    head = _output_layer(model)
    activation = getattr(getattr(head, "activation", None), "__name__", None)
    if isinstance(head, layers.Dense) and activation in PROBABILITY_ACTIVATIONS:
        logits = tf.matmul(head_input, head.kernel)
        return logits + head.bias if head.use_bias else logits
    if isinstance(head, layers.Activation) and activation in PROBABILITY_ACTIVATIONS:
        return head_input
    if isinstance(head, layers.Dense) and activation == "linear":
        return output
    return tf.math.log(tf.clip_by_value(output, 1e-7, 1.0))


def grad_cam(model, images, *, layer=None, class_index=None):
    """Compute Grad-CAM heatmaps (Selvaraju et al., 2017) for a batch of images.

    Args:
        model: a built Keras classifier taking raw images.
        images: array (batch, height, width, channels) or one image (height, width, channels),
            as the model expects them (raw 0..255 pixels for catsdogs models).
        layer: name or "nested/name" path of the layer to explain; default: the last convolution.
        class_index: class to explain, an int or one per image; default: the predicted class.

    Returns:
        (heatmaps, probabilities, layer_path): heatmaps (batch, height, width) in [0, 1] at the
        input resolution; the model's outputs; the layer used.

    Raises:
        CatsdogsError: for an unknown layer (the message lists the valid ones).
    """
    images = numpy.asarray(images, dtype=numpy.float32)
    if images.ndim == 3:
        images = images[None]
    layer_path, target = resolve_layer(model, layer or default_gradcam_layer(model))
    probe = build_probe(model, [target])
    inputs = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        output, head_input, activations = probe(inputs, training=False)
        scores = _class_scores(model, output, head_input)
        if scores.shape[-1] == 1:
            # One sigmoid unit: the logit speaks for class 1; class 0's score is its negative.
            scores = tf.concat([-scores, scores], axis=-1)
        probabilities = output if output.shape[-1] > 1 else tf.concat([1 - output, output], axis=-1)
        chosen = numpy.argmax(probabilities.numpy(), axis=-1) if class_index is None else class_index
        chosen = numpy.broadcast_to(numpy.asarray(chosen), (len(images),))
        selected = tf.gather(scores, tf.constant(chosen, tf.int32), axis=1, batch_dims=1)
    gradients = tape.gradient(selected, activations)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    heatmaps = tf.nn.relu(tf.reduce_sum(channel_weights * activations, axis=-1))
    heatmaps = tf.image.resize(heatmaps[..., None], images.shape[1:3], method="bilinear")[..., 0].numpy()
    peaks = heatmaps.reshape(len(heatmaps), -1).max(axis=1).reshape(-1, 1, 1)
    # A heatmap with no positive evidence stays all zeros rather than dividing by zero.
    heatmaps = numpy.divide(heatmaps, peaks, out=numpy.zeros_like(heatmaps), where=peaks > 0)
    return numpy.clip(heatmaps, 0.0, 1.0), numpy.asarray(output), layer_path


def feature_maps(model, image, *, layer_names=None, max_layers=6):
    """Return the activations of convolution layers for one image.

    Args:
        model: a built Keras model.
        image: one image (height, width, channels), raw as the model expects it.
        layer_names: names or paths of the layers to read; default: up to `max_layers`
            convolutions spread from the first to the last.
        max_layers: how many layers the default picks.

    Returns:
        {layer path: float array (height, width, channels)}, in model order.

    Raises:
        CatsdogsError: for an unknown layer name (the message lists the valid ones).
    """
    if layer_names:
        chosen = [resolve_layer(model, name) for name in layer_names]
    else:
        convolutions = convolution_layers(model)
        if not convolutions:
            raise CatsdogsError(
                f"Feature maps need a convolutional layer, and this model has none. Received: model={model.name}"
            )
        picks = numpy.unique(numpy.linspace(0, len(convolutions) - 1, min(max_layers, len(convolutions))).round())
        chosen = [convolutions[int(index)] for index in picks]
    probe = build_probe(model, [layer for _, layer in chosen])
    results = probe(numpy.asarray(image, dtype=numpy.float32)[None], training=False)
    return {path: numpy.asarray(activation)[0] for (path, _), activation in zip(chosen, results[2:])}
