"""The scenario language: models (`model`), validation with JSON-path reports (`validation`),
condition evaluation (`conditions`), RFM and lifecycle (`rfm`), deterministic holdout and A/B
assignment (`assignment`), durations and cron. Reference: docs/scenarios.md.

Nothing is imported here: a channel's content model (cems.email.content) builds on the scenario
language's base types (`values`, `problems`) while the scenario model is built from the channel
registry, so loading one submodule must not load the model."""
