"""`catsdogs serve`: the web service: a page to drop photos on, a JSON API, health, metrics and limits."""

import argparse
import os

from catsdogs.cli.common import add_config_arguments, resolve_config


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="Serve a trained run or an export as a web service: a page, a JSON API, health and metrics.",
        description=(
            "Serve RUN_OR_EXPORT over HTTP: the page at /, POST /v1/predict (multipart `files` or one raw image), "
            "POST /v1/explain (Grad-CAM), GET /v1/model, /healthz, /readyz, /metrics and /docs. A run folder is "
            "served through its ONNX export (RUN/export/onnx), made first when missing or older than the run's "
            "model. Every limit is a key of the [serve] config section (`catsdogs config` lists them). Set "
            "CATSDOGS_API_KEY to require `Authorization: Bearer <key>` on /v1/. SIGTERM drains the requests in "
            "flight and exits 0. Needs the `serve` extra: pip install 'catsdogs[serve]'."
        ),
    )
    parser.add_argument(
        "source",
        metavar="RUN_OR_EXPORT",
        help="Run folder made by `catsdogs train`, or export folder (RUN/export/onnx).",
    )
    parser.add_argument("--host", help="Address to listen on. Default: serve.host (127.0.0.1, this machine only).")
    parser.add_argument("--port", type=int, help="Port to listen on (0: a free one). Default: serve.port (8000).")
    parser.add_argument(
        "--cors-origin",
        metavar="ORIGIN",
        help="Let pages from this one origin (e.g. https://photos.example.com) call the API. Default: CORS off.",
    )
    add_config_arguments(parser)
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl+C; return 0 after a clean shutdown, 2 when the model cannot be loaded."""
    overrides = list(arguments.overrides)
    # The flags win over --config and --set, as flags do in every command.
    for key, value in (("host", arguments.host), ("port", arguments.port), ("cors_origin", arguments.cors_origin)):
        if value is not None:
            overrides.append(f"serve.{key}={_toml_value(value)}")
    config = resolve_config(argparse.Namespace(config=arguments.config, overrides=overrides))
    # FastAPI and uvicorn come with the `serve` extra; without it, main() names the extra to install.
    from catsdogs.service import API_KEY_VARIABLE, ServiceSettings
    from catsdogs.service.server import serve

    serve_config = config.serve
    settings = ServiceSettings(
        precision=serve_config.precision,
        max_upload_mb=serve_config.max_upload_mb,
        max_files=serve_config.max_files,
        max_pixels=serve_config.max_pixels,
        max_batch_size=serve_config.max_batch_size,
        batch_wait_ms=serve_config.batch_wait_ms,
        queue_size=serve_config.queue_size,
        queue_timeout_s=serve_config.queue_timeout_s,
        max_in_flight=serve_config.max_in_flight,
        inference_workers=serve_config.inference_workers,
        intra_op_threads=serve_config.intra_op_threads,
        decode_threads=serve_config.decode_threads,
        body_timeout_s=serve_config.body_timeout_s,
        threshold=config.predict.threshold,
        cors_origin=serve_config.cors_origin,
    )
    return serve(
        arguments.source,
        host=serve_config.host,
        port=serve_config.port,
        settings=settings,
        api_key=os.environ.get(API_KEY_VARIABLE) or None,
        header_timeout_s=serve_config.header_timeout_s,
        keep_alive_timeout_s=serve_config.keep_alive_timeout_s,
        drain_timeout_s=serve_config.drain_timeout_s,
    )


def _toml_value(value):
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
