"""Schema fuzzing: schemathesis generates requests from /openapi.json for every operation, a bounded number of
examples each (derandomized, so a run is repeatable); no answer is a 5xx and every answer matches the schema."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from catsdogs.service import ServiceSettings, create_app
from serve_fixtures import READY_TIMEOUT_S

EXAMPLES_PER_OPERATION = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def service_schema(served_model):
    """The schema of a fresh service of the fake run (Grad-CAM on), loaded and ready before any case runs.

    One app per test: schemathesis ends an app's lifespan when the test that started it ends.
    """
    app = create_app(served_model.run_dir, settings=ServiceSettings(max_files=4), progress=lambda line: None)
    # Loading the schema starts the app's lifespan (schemathesis runs it once per app), which loads the model.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert app.state.service.loaded.wait(READY_TIMEOUT_S) and app.state.service.failure is None
    return schema


# Every operation of the API; the first test proves the list is complete, so a new endpoint is fuzzed too.
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/model"),
    ("POST", "/v1/predict"),
    ("POST", "/v1/explain"),
]


def test_every_operation_of_the_schema_is_fuzzed(service_schema):
    found = {(operation.ok().method.upper(), operation.ok().path) for operation in service_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Negative cases (data that breaks the schema) exist only where a request carries data: the uploads.
CASES = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    (method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if method == "POST"
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_server_errors_and_answers_match_the_schema(service_schema, method, path, mode):
    operation = service_schema[path][method]

    # schemathesis's own pytest integration (`schemathesis.pytest.from_fixture`) does not run under pytest 9,
    # so each operation's cases come from its Hypothesis strategy, as schemathesis documents for plain tests.
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case):
        case.call_and_validate(checks=CHECKS)

    call()
