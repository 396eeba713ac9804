"""The fast email validation (app/email_domains.py) gives pydantic's EmailStr results and errors."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, ValidationError

import app.jobs  # noqa: F401  (memoizes the domain check, as in production)
from app.delivery.email_domains import EmailAddress


class Fast(BaseModel):
    email: EmailAddress


class Stock(BaseModel):
    email: EmailStr


def outcome(model: type[BaseModel], value: str) -> tuple[str, str]:
    try:
        return "ok", model.model_validate({"email": value}).email  # type: ignore[attr-defined]
    except ValidationError as error:
        (problem,) = error.errors(include_url=False)
        return problem["type"], problem["msg"]


ADDRESSES = [
    "user1@example.com",
    "User.Name+tag@EXAMPLE.com",
    "postmaster@example.com",
    "PostMaster@Example.com",
    "a@b",
    "x@localhost",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    '"quoted"@example.com',
    "Bob <bob@example.com>",
    " a@example.com ",
    "ü@example.com",
    "a@xn--bcher-kva.example",
    "a@bücher.example",
    "a" * 70 + "@example.com",
    "a@" + "b" * 250 + ".com",
    "a" * 64 + "@" + ("b" * 60 + ".") * 3 + "com",
    "a@example.com.",
    "a@-example.com",
    "a@1.2.3.4",
    "a@[1.2.3.4]",
    "a@x.test",
    "a@x.onion",
    "a@@example.com",
    "a@example..com",
    "@example.com",
    "a@",
    "a\r\n@example.com",
    "{weird}|~!#$%&'*+/=?^`@example.com",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_same_result_as_email_str(address: str) -> None:
    assert outcome(Fast, address) == outcome(Stock, address)


LOCAL = st.text(alphabet=string.ascii_letters + string.digits + ".-+_!#$%&'*/=?^`{|}~\" <>ü", max_size=70)
DOMAIN = st.one_of(
    st.text(alphabet=string.ascii_lowercase + string.digits + ".-", max_size=30),
    st.sampled_from(["example.com", "EXAMPLE.org", "xn--bcher-kva.example", "localhost", "x.test", "[1.2.3.4]"]),
)


@settings(max_examples=300, deadline=None)
@given(LOCAL, DOMAIN)
def test_same_result_as_email_str_on_generated_addresses(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert outcome(Fast, address) == outcome(Stock, address)


def test_json_schema_is_email_str_s() -> None:
    assert Fast.model_json_schema()["properties"]["email"] == {"format": "email", "title": "Email", "type": "string"}
