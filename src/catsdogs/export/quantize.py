"""Smaller ONNX artifacts from a float32 ONNX model: int8 (static, calibrated on photos) and float16.

Both keep float32 inputs and outputs, so they take the same pixels as the float32 export; each is
written atomically and returns its settings as a JSON-able dict for export.json.

The int8 settings, measured on EfficientNet-Lite0 (ImageNet weights, 288 px): pooled features of
500 real photos against float32, mean cosine similarity, on a CPU without VNNI and on ONNX Runtime's
exact path (`session.x64quantprecision`, which computes what a VNNI CPU computes):

- uint8 activations x int8 weights (U8S8), QDQ, per-channel weights: what ONNX Runtime's x86
  kernels run (it rewrites int8 activations to uint8 there), and ReLU6 outputs are never negative.
- 7-bit weights (reduce_range). Without VNNI, ONNX Runtime multiplies with VPMADDUBSW, which sums
  two uint8 x int8 products in a saturating 16-bit integer (255 x 127 x 2 = 64,770 > 32,767); its
  docs say so and pair reduce_range with per-channel weights. Full 8-bit weights gave 0.881 there
  (0.992 exact): saturation. 7-bit weights give 0.972 on both, so one file is right on every CPU.
- Depthwise convolutions keep 8 bits: their kernels widen both operands before multiplying and never
  saturate (0.982 on both paths, the same bits). uint8 weights (U8U8) never saturate either, and
  reached 0.993, but ran about 6 times slower than float32.
- The head (global pooling, dense layer, sigmoid or softmax) stays float32: it costs almost nothing,
  and an int8 sigmoid would move the probability in steps of 1/256.
- MinMax calibration: Entropy (0.9716) and Percentile (0.9722) were within noise of MinMax (0.9716),
  and only MinMax streams: ONNX Runtime's histogram calibrators hold every activation of every
  calibration image in memory at once.

float16 (`onnxruntime.transformers.float16`, keep_io_types): 0.99998 on the same photos. ONNX
Runtime's x86 CPU provider has no float16 convolution: it casts those operators to float32 itself,
so on x86 the file is half the size but not faster than float32.
"""

from __future__ import annotations

import itertools
import os
import platform
import tempfile
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy

from catsdogs.errors import CatsdogsError
from catsdogs.fileio import atomic_write_bytes

if typing.TYPE_CHECKING:
    import onnx

# The chosen int8 settings, named as ONNX Runtime names them; the module docstring says why.
INT8_FORMAT = "QDQ"
INT8_ACTIVATION_TYPE = "QUInt8"
INT8_WEIGHT_TYPE = "QInt8"
INT8_PER_CHANNEL = True
INT8_REDUCE_RANGE = True
INT8_CALIBRATION_METHOD = "MinMax"

# The CPU features that decide how ONNX Runtime multiplies 8-bit numbers on x86, as /proc/cpuinfo names them.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")

_QUANTIZATION_OPERATORS = ("QuantizeLinear", "DequantizeLinear")
# How `classifier_head_nodes` recognises the head when it walks back from the outputs.
_OUTPUT_OPERATORS = {"Sigmoid", "Softmax", "Add", "Relu", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"}
_DENSE_OPERATORS = {"MatMul", "Gemm"}
_SHAPE_OPERATORS = {"Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Transpose"}
_POOLING_OPERATORS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean"}


def quantize_onnx_int8(
    float_model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration_batches: Iterable[numpy.ndarray],
) -> dict:
    """Write an int8 copy of a float32 ONNX model, calibrated on real images, and return its settings.

    The float model is pre-processed as ONNX Runtime recommends (its graph optimizations and ONNX
    shape inference), then quantized statically in QDQ format with the module's `INT8_*` settings.
    The float model is left untouched; `out_path` appears only once it is complete.

    Args:
        float_model_path: the float32 ONNX model, one image input (n, height, width, 3).
        out_path: the `.onnx` file to write; its folder is created if missing.
        calibration_batches: float32 batches (n, height, width, 3) of exactly what the model is fed (raw
            0..255 pixels for a catsdogs export): a few hundred training photos is enough.

    Returns:
        The settings used: format, activation and weight types, per_channel, reduce_range, calibration
        method, calibration images, the operators quantized and left in float, the CPU it was built on
        and the onnxruntime version.

    Raises:
        CatsdogsError: if the float model is missing, `calibration_batches` is empty, or a batch does not
            fit the model's input.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_model_path = _existing_model(float_model_path)
    out_path = Path(out_path)
    input_name, input_shape = _image_input(float_model_path)
    batches = _CheckedBatches(calibration_batches, input_name=input_name, input_shape=input_shape)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.tmp-") as work_dir:
        prepared_path = Path(work_dir) / "prepared.onnx"
        quantized_path = Path(work_dir) / "quantized.onnx"
        # Symbolic shape inference is for transformers and needs sympy; ONNX shape inference covers a CNN.
        quant_pre_process(str(float_model_path), str(prepared_path), skip_symbolic_shape=True)
        # The head (pooling, dense layer, sigmoid or softmax) costs almost nothing, and in int8 its output
        # probability would move in steps of 1/256: it stays in float32.
        prepared = onnx.load(str(prepared_path))
        head = classifier_head_nodes(prepared)
        # ONNX Runtime's depthwise kernels widen both operands to 32 bits before multiplying, so they never
        # saturate: their weights keep all 8 bits (the module docstring has the measurements).
        depthwise = depthwise_weights(prepared)
        quantize_static(
            str(prepared_path),
            str(quantized_path),
            batches,
            quant_format=getattr(QuantFormat, INT8_FORMAT),
            per_channel=INT8_PER_CHANNEL,
            reduce_range=INT8_REDUCE_RANGE,
            activation_type=getattr(QuantType, INT8_ACTIVATION_TYPE),
            weight_type=getattr(QuantType, INT8_WEIGHT_TYPE),
            calibrate_method=getattr(CalibrationMethod, INT8_CALIBRATION_METHOD),
            nodes_to_exclude=head,
            extra_options={"TensorQuantOverrides": {name: [{"axis": 0, "reduce_range": False}] for name in depthwise}},
        )
        quantized_model = onnx.load(str(quantized_path))
        _copy_metadata(onnx.load(str(float_model_path), load_external_data=False), quantized_model)
        atomic_write_bytes(out_path, quantized_model.SerializeToString())
    return {
        "format": INT8_FORMAT,
        "activation_type": "uint8",
        "activation_symmetric": False,
        "weight_type": "int8",
        "weight_symmetric": True,
        "per_channel": INT8_PER_CHANNEL,
        "reduce_range": INT8_REDUCE_RANGE,
        "weight_bits": {"depthwise_convolutions": 8, "other_layers": 7 if INT8_REDUCE_RANGE else 8},
        "depthwise_weights_at_8_bits": len(depthwise),
        "calibration_method": INT8_CALIBRATION_METHOD,
        "calibration_images": batches.images,
        "calibration_batches": batches.batches,
        "preprocessing": "onnxruntime quant_pre_process: graph optimizations and ONNX shape inference",
        "nodes_kept_in_float": head,
        **operator_summary(quantized_model),
        "onnxruntime": onnxruntime.__version__,
        "built_on": cpu_description(),
        "why": (
            "uint8 activations x int8 weights is what ONNX Runtime runs on x86; 7-bit weights (reduce_range) "
            "keep its VPMADDUBSW kernels on CPUs without VNNI from saturating, so one file is right with or "
            "without VNNI; depthwise kernels cannot saturate and keep 8 bits; per-channel scales; the head "
            "stays float32; MinMax calibration matched Entropy and Percentile and streams (catsdogs.export.quantize)"
        ),
    }


def convert_onnx_float16(float_model_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Write a float16 copy of a float32 ONNX model, with float32 inputs and outputs, and return its settings.

    Weights and activations become float16 (ONNX Runtime's own converter,
    `onnxruntime.transformers.float16`); the model still takes and returns float32, so the
    preprocessing stays the same. Where ONNX Runtime's CPU provider has no float16 kernel for an
    operator, it casts that operator's inputs to float32 itself when the session starts.

    Args:
        float_model_path: the float32 ONNX model.
        out_path: the `.onnx` file to write; its folder is created if missing.

    Returns:
        The settings used: format, kept input/output types, operators left in float32, the operators and
        the onnxruntime version.

    Raises:
        CatsdogsError: if the float model is missing.
    """
    import onnx
    import onnxruntime
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    float_model_path = _existing_model(float_model_path)
    model = onnx.load(str(float_model_path))
    blocked = sorted({node.op_type for node in model.graph.node} & set(DEFAULT_OP_BLOCK_LIST))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST)
    _copy_metadata(onnx.load(str(float_model_path), load_external_data=False), converted)
    atomic_write_bytes(out_path, converted.SerializeToString())
    return {
        "format": "float16",
        "inputs_and_outputs": "float32 (keep_io_types): the same pixels as the float32 export",
        "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
        "operators_left_in_float32": blocked,
        "operators": dict(sorted(Counter(node.op_type for node in converted.graph.node).items())),
        "onnxruntime": onnxruntime.__version__,
        "built_on": cpu_description(),
    }


def operator_summary(model: onnx.ModelProto) -> dict:
    """Count which operators of a QDQ model compute on int8 values and which compute in float.

    A node counts as quantized when an input comes out of a DequantizeLinear and every output goes
    into a QuantizeLinear: the pattern ONNX Runtime fuses into one integer kernel. Any other node
    computes in float, on dequantized inputs where it has them.

    Args:
        model: an `onnx.ModelProto` in QDQ format.

    Returns:
        {"operators_quantized": {op_type: count}, "operators_in_float": {op_type: count}}.
    """
    dequantized = {output for node in model.graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    quantized, in_float = Counter(), Counter()
    for node in model.graph.node:
        if node.op_type in _QUANTIZATION_OPERATORS:
            continue
        reads_int8 = any(name in dequantized for name in node.input)
        writes_int8 = all(consumers.get(name) and set(consumers[name]) == {"QuantizeLinear"} for name in node.output)
        (quantized if reads_int8 and writes_int8 else in_float)[node.op_type] += 1
    return {
        "operators_quantized": dict(sorted(quantized.items())),
        "operators_in_float": dict(sorted(in_float.items())),
    }


def classifier_head_nodes(model: onnx.ModelProto) -> list[str]:
    """Return the names of the nodes from the last global pooling to the outputs: the classifier head.

    Walking back from each graph output, the head is the output's activation and bias (Sigmoid,
    Softmax, Add, shape operators), the dense layer (MatMul or Gemm), and the shape operators and
    global pooling before it. The walk stops at anything else, so a model without a dense head
    gives only its output activations, and never a convolution.

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        Node names, in graph order.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    head = set()
    # Each entry is (node, whether the dense layer is already behind us on this path).
    pending = [(producers[output.name], False) for output in model.graph.output if output.name in producers]
    while pending:
        node, past_dense = pending.pop()
        if node.name in head:
            continue
        if node.op_type in _POOLING_OPERATORS:
            head.add(node.name)
            continue
        if past_dense:
            allowed = node.op_type in _SHAPE_OPERATORS
        else:
            allowed = node.op_type in _OUTPUT_OPERATORS | _DENSE_OPERATORS
        if not allowed:
            continue
        head.add(node.name)
        now_past_dense = past_dense or node.op_type in _DENSE_OPERATORS
        pending.extend((producers[name], now_past_dense) for name in node.input if name in producers)
    return [node.name for node in model.graph.node if node.name in head]


def depthwise_weights(model: onnx.ModelProto) -> list[str]:
    """Return the weight names of the depthwise convolutions (one input channel per group) of an ONNX model."""
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    names = []
    for node in model.graph.node:
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        shape = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if group > 1 and shape is not None and shape[0] == group and shape[1] == 1:
            names.append(node.input[1])
    return names


def cpu_description() -> dict:
    """Return the CPU's model name and the flags that decide how 8-bit and 16-bit arithmetic runs on it.

    Returns:
        {"model": name, "machine": architecture, "flags": {flag: bool}}; on a system without
        /proc/cpuinfo the flags are None, since they cannot be known.
    """
    model_name, flags = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model_name is None:
                    model_name = value.strip()
                elif key.strip() == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model_name or platform.processor() or "unknown",
        "machine": platform.machine(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS} if flags is not None else None,
    }


def _copy_metadata(source, target):
    """Give `target` the metadata_props of `source` (class names, image size, source SHA-256) it lacks."""
    present = {entry.key for entry in target.metadata_props}
    for entry in source.metadata_props:
        if entry.key not in present:
            target.metadata_props.add(key=entry.key, value=entry.value)


def _existing_model(path):
    path = Path(path)
    if not path.is_file():
        raise CatsdogsError(
            f"The float32 ONNX model to convert does not exist. Export the run to ONNX first "
            f"(`catsdogs export RUN --format onnx`) and pass its model.onnx. Received: float_model_path={path}"
        )
    return path


def _image_input(model_path):
    """Return the name and the (batch, height, width, channels) shape of the model's one input."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CatsdogsError(
            "Only a model with one image input (batch, height, width, channels) can be calibrated here. "
            "Pass a catsdogs ONNX export. "
            f"Received: inputs={[(model_input.name, model_input.shape) for model_input in inputs]}"
        )
    return inputs[0].name, tuple(inputs[0].shape)


class _CheckedBatches:
    """ONNX Runtime's calibration data reader over an iterable of image batches, checked as they arrive.

    The first batch is read at once, so that an empty iterable is refused before any work starts.
    """

    def __init__(self, batches: Iterable[numpy.ndarray], *, input_name: str, input_shape: tuple):
        self.input_name = input_name
        self.input_shape = input_shape
        self.images = 0
        self.batches = 0
        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            raise CatsdogsError(
                "No calibration images were given, so the int8 ranges of the activations cannot be measured. "
                "Pass a few hundred training photos as float32 batches (n, height, width, 3). "
                "Received: calibration_batches=empty"
            )
        self._iterator: Iterator[numpy.ndarray] = itertools.chain([first], iterator)

    def get_next(self) -> dict | None:
        batch = next(self._iterator, None)
        if batch is None:
            return None
        batch = self._checked(batch)
        self.images += len(batch)
        self.batches += 1
        return {self.input_name: batch}

    def _checked(self, batch):
        array = numpy.asarray(batch)
        expected = self.input_shape[1:]
        fits = array.ndim == 4 and all(
            not isinstance(side, int) or side == actual for side, actual in zip(expected, array.shape[1:])
        )
        if not fits or array.dtype.kind not in "fiu" or len(array) == 0:
            raise CatsdogsError(
                f"A calibration batch does not fit the model's input: expected a non-empty numeric array "
                f"(n, {', '.join(str(side) for side in expected)}) of raw pixels, as the model is fed. "
                f"Resize the photos to the model's image size and stack them into batches. "
                f"Received: shape={array.shape}, dtype={array.dtype}"
            )
        return numpy.ascontiguousarray(array, dtype=numpy.float32)
