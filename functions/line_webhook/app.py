"""line_webhook: LINE's webhook (POST /line/webhook). Being built (issue 3): answers 503 until then."""

from __future__ import annotations

import json
from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 503,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {"success": False, "error": "not_ready", "message": "the LINE webhook is not built yet"}
        ),
    }
