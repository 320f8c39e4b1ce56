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

Some builds and CPUs print the oneDNN notice through absl before TensorFlow's
own logging (and so TF_CPP_MIN_LOG_LEVEL) is in charge: seen with
tensorflow-cpu 2.21 on an Intel Xeon. So TensorFlow's first import also runs
with file descriptor 2 sent to a temporary file, and every line of it that is
not one of these notices is written back to standard error afterwards.
"""

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
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
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


# The start-up notices, as C++ writes them: absl's pre-initialisation warning, INFO lines ("I0000 00:00:...")
# and the CPU-instruction notice.
_NOTICE = re.compile(r"WARNING: All log messages before absl::InitializeLog|I\d{4} |.*cpu_feature_guard|.*oneDNN")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Run TensorFlow's first import with its C++ notices held back; everything else it writes is passed on."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: TensorFlow's own imports of its submodules are left alone
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _notices_held_back():
            self._loader.exec_module(module)


@contextlib.contextmanager
def _notices_held_back():
    """Send file descriptor 2 to a temporary file, then write back the lines that are not start-up notices."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if line.strip() and not _NOTICE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
