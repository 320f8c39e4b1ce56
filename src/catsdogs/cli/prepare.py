"""`catsdogs prepare`: check every photo in SOURCE and write DATA's train/validation/test split."""

import argparse

from catsdogs.choices import SPLIT_MODES
from catsdogs.cli.common import EXIT_OK, add_config_arguments, resolve_config
from catsdogs.config import Config

# Each count flag, by the config key it overrides.
_COUNT_FLAGS = {"train_per_class": "train", "validation_per_class": "val", "test_per_class": "test"}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prepare` subcommand."""
    parser = subparsers.add_parser(
        "prepare",
        help="Check every photo and copy them into train/validation/test class folders.",
        description=(
            "Read SOURCE (Kaggle's flat train/ folder with cat.12.jpg-style names, a tree of class "
            "folders, or a .zip of either), fully decode every image, quarantine bad files with a "
            "reason, keep exact duplicates in one split, and write DATA/{train,validation,test}/<class>/ "
            "plus DATA/manifest.json. SOURCE is never changed."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="Folder or .zip of photos.")
    parser.add_argument("--out", metavar="DATA", required=True, help="Folder that receives the split.")
    parser.add_argument(
        "--split",
        choices=list(SPLIT_MODES),
        help="numbers: by Kaggle file number (the seed's split); fraction: seeded stratified shuffle "
        "using --val-fraction/--test-fraction of the counted images; all: every usable image, split by "
        "fraction. Default: data.split.",
    )
    parser.add_argument(
        "--train", type=int, metavar="N", help="Train images per class (numbers split). Default: data.train_per_class."
    )
    parser.add_argument(
        "--val",
        type=int,
        metavar="N",
        help="Validation images per class (numbers split). Default: data.validation_per_class.",
    )
    parser.add_argument(
        "--test", type=int, metavar="N", help="Test images per class (numbers split). Default: data.test_per_class."
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="Validation share per class (fraction/all). Default: data.validation_fraction.",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help="Test share per class (fraction/all). Default: data.test_fraction.",
    )
    parser.add_argument("--seed", type=int, help="Seed for the fraction split. Default: train.seed.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a different earlier split in DATA.")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Prepare the split that the arguments and the config describe, and print its summary."""
    from catsdogs.data.prepare import prepare_dataset

    config = resolve_config(arguments)
    split = _given_or(arguments.split, config.data.split)
    report = prepare_dataset(
        arguments.source,
        arguments.out,
        class_names=config.data.class_names,
        split=split,
        **per_class_counts(arguments, config, split),
        validation_fraction=_given_or(arguments.val_fraction, config.data.validation_fraction),
        test_fraction=_given_or(arguments.test_fraction, config.data.test_fraction),
        seed=_given_or(arguments.seed, config.train.seed),
        max_pixels=config.data.max_pixels,
        min_side=config.data.min_side,
        overwrite=arguments.overwrite,
        progress=not arguments.no_progress,
    )
    print(report.summary())
    return EXIT_OK


def per_class_counts(arguments: argparse.Namespace, config: Config, split: str) -> dict[str, int | None]:
    """Return prepare's `*_per_class` counts.

    A numbers split takes --train/--val/--test, else data.*_per_class, which the
    default config documents as the numbers split's counts. A fraction split
    takes only the flags given on the command line (None otherwise), so that on
    a small folder it draws from every usable photo instead of asking for the
    seed split's 2,000 per class.
    """
    return {
        key: getattr(arguments, flag)
        if split == "fraction"
        else _given_or(getattr(arguments, flag), getattr(config.data, key))
        for key, flag in _COUNT_FLAGS.items()
    }


def _given_or(value, fallback):
    return fallback if value is None else value
