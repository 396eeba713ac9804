"""emailJob: send one email."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.delivery import mail
from app.delivery.email_domains import EmailAddress
from app.jobs import JobContext, job_type


class EmailData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    subject: str = Field(default="Hello from taskqueue", max_length=998)
    body: str = Field(default="", max_length=100_000)


@job_type(
    "emailJob",
    schema=EmailData,
    example=lambda n: {"email": f"user{n}@example.com", "subject": f"Demo #{n}", "body": "Sent by the producer."},
)
def email_job(job_id: str, data: dict[str, Any], context: JobContext) -> None:
    settings = context.settings
    message = mail.build_message(
        job_id=job_id,
        sender=settings.mail_from,
        to=data["email"],
        subject=data.get("subject", EmailData.model_fields["subject"].default),
        body=data.get("body", ""),
    )
    mail.deliver(message, smtp_url=settings.smtp_url, mbox_path=settings.mbox_path)
