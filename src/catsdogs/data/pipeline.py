"""The tf.data settings every pipeline shares: a fixed degree of parallelism and no autotuning.

Why not `tf.data.AUTOTUNE`: with the autotuner on, deleting an iterator waits
for the autotuner's thread to wake from its current sleep, and those sleeps
double from 10 ms. A pass over a split therefore ends with an idle wait that
can be as long as the pass itself: measured on 2 cores, 400 photos through
EfficientNet-Lite0 at 288 px took 10.2 s in one pass and exactly 20.52 s in two
others, 6.9-9.4 s of which was `del iterator` with no CPU in use. The totals
sit on 10 ms x (2^k - 1) (10.23 s, 20.47 s), the autotuner's schedule. With
autotuning off and a fixed number of parallel calls the same deletion takes
milliseconds (docs/benchmarks.md, "The feature-extraction stall").

On a CPU the right parallelism is simply the number of cores this process may
use: decoding is CPU-bound, and more threads than cores only queue.
"""

from __future__ import annotations

import os
import typing

if typing.TYPE_CHECKING:
    import tensorflow as tf

# Batches decoded ahead of the consumer: enough to hide one batch's decoding behind the model.
PREFETCH_BATCHES = 2


def parallel_calls() -> int:
    """Return the number of CPU cores this process may run on: the parallelism of every `map`."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Return `dataset` with tf.data's autotuner turned off (see the module docstring for why).

    Every `map` in the pipeline must then give `num_parallel_calls=parallel_calls()`
    and every `prefetch` an explicit size, since AUTOTUNE values are no longer tuned.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
