"""The scenario language: models (`model`), validation with JSON-path reports (`validation`),
condition evaluation (`conditions`), RFM and lifecycle (`rfm`), deterministic holdout and A/B
assignment (`assignment`), durations and cron. Reference: docs/scenarios.md."""

from cems.scenario.model import Scenario

__all__ = ["Scenario"]
