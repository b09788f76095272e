"""Deployed stages as samconfig.toml names them: the stack and region a `--stage` means (for the CLIs)."""

from __future__ import annotations

import tomllib
from pathlib import Path

# Where the project deploys unless samconfig.toml says otherwise, and the local stack's region.
DEFAULT_REGION = "ap-northeast-1"


def stage_stack(stage: str, config: Path) -> tuple[str, str]:
    """(stack name, region) of a stage in samconfig.toml."""
    with config.open("rb") as f:
        samconfig = tomllib.load(f)
    try:
        parameters = samconfig[stage]["deploy"]["parameters"]
    except KeyError:
        raise SystemExit(f"error: stage {stage!r} has no deploy parameters in {config}") from None
    return parameters["stack_name"], parameters.get("region", DEFAULT_REGION)
