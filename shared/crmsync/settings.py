"""Runtime configuration, read from the environment once per process and validated."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every name here is an environment variable (upper case) set by template.yaml."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    stage: str = "dev"
    event_bus_name: str
    event_source: str = "crmsync"
    accounts_table: str
    cursors_table: str
    threads_table: str
    directory_table: str
    messages_table: str
    activities_table: str
    idempotency_table: str
    data_bucket: str
    sync_queue_url: str
    sync_dlq_url: str | None = None
    resync_state_machine_arn: str | None = None
    # Claims of the CRM's JWT that carry the tenant and the role; `sub` is the user.
    jwt_tenant_claim: str = "tenant_id"
    jwt_role_claim: str = "role"
    # How many shards the due index is spread over (scheduler fan-out).
    due_shards: int = 16


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()  # values come from the environment
