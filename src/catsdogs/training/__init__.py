"""Training: `train(config, data_dir, ...)` fills a run folder; fit, transfer learning, features, callbacks.

`from catsdogs.training import train` is the public entry point. It is looked
up lazily, so importing a light submodule (optimizers, callbacks) does not load
the whole trainer.
"""


def __getattr__(name):
    if name == "train":
        from catsdogs.training.trainer import train

        return train
    raise AttributeError(f"module 'catsdogs.training' has no attribute {name!r}")
