"""GPU memory growth: let TensorFlow take GPU memory as it needs it, as the seed notes' set-up does.

By default TensorFlow reserves almost all of every GPU's memory the moment it
first touches the devices, so a second process (an evaluation beside a
training run, a notebook, the web service) cannot start on the same GPU.
`enable_memory_growth` asks for memory growth on every GPU instead: memory is
taken as the model needs it.

It must run before TensorFlow initialises the devices, which the first
operation or model build does; `train` calls it first. (`catsdogs evaluate`
and `predict` run ONNX Runtime by default and may run without TensorFlow, so
they do not import this module.) Later in the same process the devices are
already initialised and the setting can no longer change: that is logged and
not an error, because the process already has its memory. On a machine
without a GPU it does nothing.
"""

import logging

import tensorflow as tf

logger = logging.getLogger("catsdogs.training")


def enable_memory_growth() -> list[str]:
    """Turn on memory growth for every visible GPU; a no-op without GPUs.

    Returns:
        The names of the GPUs that now grow their memory on demand (including those
        that already did); an empty list on a CPU-only machine.
    """
    growing = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            if tf.config.experimental.get_memory_growth(gpu):
                growing.append(gpu.name)
                continue
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:
            # "Physical devices cannot be modified after being initialized": too late in this process, not fatal.
            logger.warning(
                "Could not turn on memory growth for %s: TensorFlow had already initialised it (%s). This process "
                "keeps the memory TensorFlow reserved; call catsdogs.training.devices.enable_memory_growth() "
                "before building any model or running any TensorFlow operation to share the GPU.",
                gpu.name,
                error,
            )
            continue
        growing.append(gpu.name)
    if growing:
        logger.info("GPU memory growth on: %s", ", ".join(growing))
    return growing
