"""`catsdogs serve`: the web service: a JSON API, a page to drop photos on, health, metrics and limits.

`create_app(RUN_OR_EXPORT, settings=ServiceSettings(...))` builds the FastAPI
application (`app`), and `serve(...)` runs it in uvicorn (`server`). The
service predicts through the TensorFlow-free runtime (`runtime.OnnxPredictor`
on an ONNX export); TensorFlow is imported only for Grad-CAM, and only when it
is asked for. docs/serve.md is the reference: endpoints, config keys, error
codes and metrics.
"""

from catsdogs.service.app import API_KEY_VARIABLE, create_app
from catsdogs.service.settings import ServiceSettings

__all__ = ["API_KEY_VARIABLE", "ServiceSettings", "create_app"]
