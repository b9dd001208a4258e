"""Property-based tests of the live API: schemathesis sends requests generated from the OpenAPI
schema of a real ``ternaus serve`` (issue 7). No request may get a 5xx answer, and every error
answer is JSON with a message that says what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.api.live import LiveBackend  # noqa: E402

#: Examples per operation and phase: enough to find crashes, small enough for ~60 s on 2 cores.
MAX_EXAMPLES = int(os.environ.get("TERNAUS_SCHEMATHESIS_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBackend]:
    folder = tmp_path_factory.mktemp("schemathesis")
    env = {
        **os.environ,
        "TERNAUS_WORK_DIR": str(folder / "jobs"),
        "TERNAUS_MODELS_DIR": str(folder / "models"),
        "TERNAUS_TOKEN": "",
        "TERNAUS_ALLOWED_DIRS": str(folder / "data"),
        "TERNAUS_ALLOW_NETWORK_FILES": "",
        "TERNAUS_MAX_QUEUED_JOBS": "4",
    }
    backend = LiveBackend([], env, folder / "serve.log")
    yield backend
    backend.stop()


def error_is_json_with_a_message(ctx, response, case) -> None:
    """4xx and 5xx answers are ``{"error": {"message": "...", "details": ...}}``."""
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        f"{response.status_code} answer is not JSON: {response.headers}"
    )
    body = response.json()
    message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    assert isinstance(message, str) and message.strip(), f"no error message in {body!r}"


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors_and_json_errors(live: LiveBackend, mode: str) -> None:
    """Every operation of /v1/openapi.json, with data that fits its schema and data that
    does not."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        def call(case) -> None:
            case.call_and_validate(checks=[not_a_server_error, error_is_json_with_a_message])

        try:
            call()
        except Unsatisfiable:  # no invalid data exists (e.g. GET /v1/health has no input)
            assert mode == "negative", operation.label
