"""Console settings: the operators' user pool and the address ranges operators may come from.
Read from the environment by `cems.settings` (the one place that reads it).
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from pydantic import Field

from cems.settings import SettingsArea, variables


class ConsoleSettings(SettingsArea):
    """Where operators sign in (template.yaml: OperatorPool and its client) and from where."""

    model_config = variables(
        pool_id="OPERATOR_POOL_ID",
        client_id="OPERATOR_POOL_CLIENT_ID",
        source_cidrs="OPERATOR_SOURCE_CIDRS",
        scenario_bucket="SCENARIO_BUCKET",
        audience_sync_max_items="CEMS_AUDIENCE_SYNC_MAX_ITEMS",
    )
    pool_id: str = ""
    client_id: str = ""
    # Comma-separated CIDR ranges; empty allows any address (cems.console.access.SourceAddresses).
    source_cidrs: str = ""
    # Where the loader writes its report on each uploaded file (reports/<name>.json).
    scenario_bucket: str = ""
    # An audience count of a CustomersTable larger than this (its size estimate, in items) is fanned
    # out as a run (cems.console.audience_runs: SYNC_MAX_ITEMS, why 150,000); up to it, answered at once.
    audience_sync_max_items: int = Field(default=150_000, ge=0)
