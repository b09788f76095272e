"""Run in a fresh interpreter by bench.coldstart: time one cold start and print it as a BENCH line.

Modes: `boto3` (bare `import boto3`), `init` (import the function's app.py, which builds its clients
and services at import), `request` (`init`, then the first request through lambda_handler), `floor`
(what any HTTP function validating with pydantic loads: see floor()).
Arguments after the mode are put first on sys.path, as Lambda puts the function and its layer there.
"""

import importlib
import json
import sys
import time
from typing import Any


class Context:
    """The attributes of a Lambda context that Powertools' Logger reads."""

    function_name = "CollectFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-northeast-1:123456789012:function:CollectFunction"
    aws_request_id = "bench-first-request"


def floor() -> None:
    """The least an HTTP function that validates its input with pydantic can load at init: boto3
    and a DynamoDB client, Powertools' Logger, Metrics and HTTP resolver (lazy packages, as the
    functions load them), and one small pydantic model, built and used once. No CEMS rule at all."""
    from cems import lazy_packages

    lazy_packages.install(lazy_packages.POWERTOOLS)
    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from cems.adapters import aws
    from pydantic import BaseModel

    aws.dynamodb()
    Logger(service="floor")
    Metrics()
    APIGatewayHttpResolver()

    class Message(BaseModel):
        type: str
        user_id: str | None = None

    Message(type="track")


def main() -> None:
    mode = sys.argv[1]
    sys.path[:0] = sys.argv[2:]
    event = json.loads(sys.stdin.read()) if mode == "request" else None
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    if mode == "boto3":
        import boto3  # noqa: F401

        result["import"] = time.perf_counter() - t0
    elif mode == "floor":
        floor()
        result["import"] = time.perf_counter() - t0
    else:
        app: Any = importlib.import_module("app")

        result["import"] = time.perf_counter() - t0
        if event is not None:
            response = app.lambda_handler(event, Context())
            result["request"] = time.perf_counter() - t0
            result["status"] = response["statusCode"]
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
