"""webhookJob: POST a signed JSON payload to a URL."""

from __future__ import annotations

from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.delivery import webhooks
from app.jobs import JobContext, context_settings, job_type


class WebhookData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(
        description="http(s) URL; private addresses need WEBHOOK_ALLOWED_HOSTS",
        json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},  # pydantic says only "format: uri"
    )
    payload: Any = Field(description="any JSON value, sent as the request body")

    @field_validator("url")
    @classmethod
    def public_destination(cls, url: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
        # Checked again at delivery time against the resolved address.
        allowed = context_settings(info).webhook_allowed_hosts
        try:
            webhooks.check_destination(str(url), allowed, resolve=False)
        except webhooks.ForbiddenDestination as error:
            raise ValueError(str(error)) from None
        return url


@job_type(
    "webhookJob",
    schema=WebhookData,
    example=lambda n: {"url": "https://example.com/hooks/demo", "payload": {"event": "demo", "n": n}},
)
def webhook_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    settings = context.settings
    webhooks.deliver(
        job_id=job_id,
        url=data["url"],
        payload=data.get("payload"),
        secret=settings.webhook_secret,
        timeout_s=settings.webhook_timeout_s,
        allowed_hosts=settings.webhook_allowed_hosts,
    )
