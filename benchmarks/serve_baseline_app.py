"""The baseline of benchmarks/serve_load.py: the FastAPI app a user writes today around `catsdogs.inference.Predictor`.

It loads the run folder's Keras model with `Predictor.from_run_dir` and, for
each request, reads the uploaded photos and calls `predict` once, in the
request handler: no micro-batching, no queue, no limits, no ONNX. It takes
the same multipart `files` body as `catsdogs serve`'s `POST /v1/predict`, so
the load generator sends both the same bytes. `GET /healthz` answers once the
model is loaded (it loads before uvicorn starts listening). On SIGTERM it
ends as a plain `uvicorn.run` app does: uvicorn re-raises the signal after
its shutdown, so the exit status is -15.

Usage (benchmarks/serve_load.py runs it in a process of its own):
    python benchmarks/serve_baseline_app.py RUN --port 8001
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy  # noqa: E402  (after TensorFlow's log level is set)
import uvicorn  # noqa: E402
from fastapi import FastAPI, File, UploadFile  # noqa: E402

from catsdogs.inference import Predictor  # noqa: E402


def create_app(run_dir: Path) -> FastAPI:
    """The baseline app: one `Predictor` for the process, one `predict` call per request."""
    predictor = Predictor.from_run_dir(run_dir)
    # One call before the first client, as any server would, so TensorFlow traces the model now.
    height, width = predictor.image_size
    predictor.predict(numpy.zeros((height, width, 3), numpy.uint8))
    app = FastAPI(title="catsdogs baseline")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(files: Annotated[list[UploadFile], File()]) -> dict:
        images = [await upload.read() for upload in files]
        predictions = predictor.predict(images, sources=[upload.filename or "photo" for upload in files])
        return {"predictions": [prediction.to_dict() for prediction in predictions]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder made by `catsdogs train`")
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1")
    arguments = parser.parse_args()
    uvicorn.run(create_app(arguments.run), host="127.0.0.1", port=arguments.port, log_level="warning")


if __name__ == "__main__":
    main()
