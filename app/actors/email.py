"""emailJob: send one email."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.delivery import mail
from app.delivery.email_domains import EmailAddress
from app.jobs import JobContext, job_type


def _without(character_class: str) -> str:
    """A pattern matching strings with none of the characters of `character_class` ("[...]")."""
    return f"^[^{character_class[1:-1]}]*$"


# What an email could never be built from is refused at enqueue (422 naming the field), not
# retried at the worker. The patterns say so in the OpenAPI document (pydantic would not), the
# validators say what is wrong.
class EmailData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    subject: str = Field(
        default="Hello from taskqueue",
        max_length=998,
        description="one line: no control characters or line breaks",
        json_schema_extra={"pattern": _without(mail.HEADER_UNSAFE)},
    )
    body: str = Field(
        default="",
        max_length=100_000,
        description="plain text; line breaks allowed, NUL not",
        json_schema_extra={"pattern": _without(mail.BODY_UNSAFE)},
    )

    @field_validator("subject")
    @classmethod
    def _one_header_line(cls, subject: str) -> str:
        problem = mail.header_problem(subject)
        if problem:
            raise ValueError(problem)
        return subject

    @field_validator("body")
    @classmethod
    def _text(cls, body: str) -> str:
        problem = mail.body_problem(body)
        if problem:
            raise ValueError(problem)
        return body


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
