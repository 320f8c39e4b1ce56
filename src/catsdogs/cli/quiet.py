"""Quiet start-up: keep TensorFlow's start-up notices off the terminal unless `catsdogs --verbose` asks for them.

Importing TensorFlow prints lines that say nothing about the user's photos:
its C++ start-up notices (the oneDNN and CPU-instruction notices, preceded by
absl's "All log messages before absl::InitializeLog()" warning), Python
warnings through absl and the "tensorflow" logger, and FutureWarnings from
library code such as Keras's bundled tf2onnx. The C++ notices are governed by
the TF_CPP_MIN_LOG_LEVEL environment variable, which TensorFlow reads when it
is first imported, so `quiet_start_up` must run before that; the command line
calls it first thing. oneDNN itself stays on (TF_ENABLE_ONEDNN_OPTS would
change the numbers), only its notice is hidden.
"""

import logging
import os
import warnings
from collections.abc import Sequence

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# 2 hides TensorFlow's C++ INFO and WARNING lines; errors still show.
QUIET_LOG_LEVEL = "2"
VERBOSE_FLAG = "--verbose"
# FutureWarnings and DeprecationWarnings raised in these libraries are their
# maintainers' to act on, not the user's.
_LIBRARY_MODULES = r"(tensorflow|keras|tf2onnx|onnx|onnxruntime|absl|google\.protobuf|h5py)(\.|$)"


def verbose_requested(argv: Sequence[str]) -> bool:
    """Whether `--verbose` (or an abbreviation argparse accepts, like `--verb`) comes before the command.

    Global options precede COMMAND, so the scan stops at the first argument that is not an option.
    This runs before argument parsing because `train --help` already imports TensorFlow while parsing.
    """
    for argument in argv:
        if not argument.startswith("-"):
            return False
        if argument.startswith("--verb") and VERBOSE_FLAG.startswith(argument):
            return True
    return False


def quiet_start_up() -> None:
    """Hide TensorFlow's start-up notices and library warnings; call it before TensorFlow is imported.

    A TF_CPP_MIN_LOG_LEVEL that the user set wins over the quiet level.
    """
    os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LOG_LEVEL)
    # Before absl's logging is set up, a Python-side warning (e.g. from SavedModel export)
    # goes to Python's root handler as "WARNING:absl:...".
    try:
        import absl.logging
    except ImportError:
        pass
    else:
        absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=_LIBRARY_MODULES)
