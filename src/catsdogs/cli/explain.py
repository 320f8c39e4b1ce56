"""`catsdogs explain`: Grad-CAM overlays and feature-map grids for a few photos."""

import argparse

from catsdogs.choices import DEFAULT_THRESHOLD
from catsdogs.cli.common import EXIT_FAILURES, EXIT_OK


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `explain` subcommand."""
    parser = subparsers.add_parser(
        "explain",
        help="Grad-CAM overlays and feature-map grids showing where a trained run looks.",
        description=(
            "For each IMAGE, write a Grad-CAM overlay (the photo next to its heatmap, labelled with the prediction) "
            "and a grid of feature maps per chosen convolutional layer. Grad-CAM uses the last convolutional layer "
            "unless --layer names another; nested backbones are supported."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run folder made by `catsdogs train`.")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="Photos to explain.")
    parser.add_argument(
        "--layer",
        metavar="NAME",
        help="Layer Grad-CAM explains (name, or backbone/name). Default: the last convolutional layer.",
    )
    parser.add_argument(
        "--feature-layer",
        dest="feature_layers",
        metavar="NAME",
        action="append",
        help="Layer whose feature maps to draw; repeatable. Default: up to 6 convolutional layers, first to last.",
    )
    parser.add_argument("--no-feature-maps", action="store_true", help="Write only the Grad-CAM overlays.")
    parser.add_argument("--out", metavar="DIR", help="Folder for the PNGs. Default: RUN/figures/explain.")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help=f"Decision threshold on the second class's probability (two classes). Default: {DEFAULT_THRESHOLD}.",
    )
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Explain every image and print what was written; return 1 if any image failed, else 0."""
    from catsdogs.explain import explain_images
    from catsdogs.inference import check_threshold

    explanations = explain_images(
        arguments.run_dir,
        arguments.images,
        layer=arguments.layer,
        out_dir=arguments.out,
        feature_layers=arguments.feature_layers,
        feature_maps=not arguments.no_feature_maps,
        threshold=check_threshold(arguments.threshold),
    )
    for explanation in explanations:
        if explanation.error:
            print(f"{explanation.source}: ERROR {explanation.error}")
            continue
        print(f"{explanation.source}: {explanation.label} ({explanation.probability:.4f})")
        print(f"  grad-cam:     {explanation.gradcam_path}")
        for path in explanation.feature_map_paths:
            print(f"  feature maps: {path}")
    failed = sum(explanation.error is not None for explanation in explanations)
    return EXIT_FAILURES if failed else EXIT_OK
