"""Faster email validation, with email_validator's results.

pydantic's EmailStr runs email_validator on every address: about 8 µs warm, and three times that
between requests, as part of a larger whole. Two things make it cheaper here:

- The check of an address's domain (IDNA tables, character by character) is memoized: it
  depends on the domain alone, and jobs come with the same few domains over and over. Invalid
  domains raise as before (exceptions are not remembered). Caveat: changes an application makes
  to email_validator.SPECIAL_USE_DOMAIN_NAMES at run time do not reach domains already checked
  (we make none). The check is email_validator's own function (an internal: pinned in
  pyproject.toml, its shape checked by tests/test_dependency_internals.py); email_validator
  itself is left as it is.
- `EmailAddress` takes the common shape, a plain ASCII `local@domain`, straight to the domain
  check and the length limits, and gives everything else (quoted local parts, display names,
  Unicode, errors) to pydantic's own email validation. Both paths give the same normalized
  address; tests/test_email_domains.py checks them against each other.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Annotated, Any

import email_validator
from email_validator import rfc_constants
from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email

# The module, not its function of the same name: its domain check is what is memoized here.
_checks = importlib.import_module("email_validator.validate_email")
# An unquoted ASCII dot-atom local part (email_validator's first and fastest rule) and an ASCII
# domain, for the domain check to judge.
_PLAIN_ADDRESS = re.compile(rf"([{rfc_constants.ATEXT}]+(?:\.[{rfc_constants.ATEXT}]+)*)@([A-Za-z0-9.-]+)")

REMEMBERED_DOMAINS = 4_096


@functools.lru_cache(maxsize=REMEMBERED_DOMAINS)
def _domain_check(domain: str, test_environment: bool, globally_deliverable: bool) -> Any:
    return _checks.validate_email_domain_name(
        domain, test_environment=test_environment, globally_deliverable=globally_deliverable
    )


def normalized_email(value: str) -> str:
    """The address as pydantic's EmailStr validates and normalizes it; its error otherwise."""
    match = _PLAIN_ADDRESS.fullmatch(value)
    if match is None or match[1].lower() in rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES:
        return validate_email(value)[1]
    local, domain = match[1], match[2]
    try:
        names = _domain_check(domain, email_validator.TEST_ENVIRONMENT, email_validator.GLOBALLY_DELIVERABLE)
    except email_validator.EmailNotValidError:
        return validate_email(value)[1]  # raises, with email_validator's reason
    normalized = f"{local}@{names['domain']}"
    limit = rfc_constants.EMAIL_MAX_LENGTH
    if max(len(value), len(normalized.encode()), len(local) + 1 + len(names["ascii_domain"])) > limit:
        return validate_email(value)[1]
    return normalized


#: An email address field: EmailStr's validation, error messages and JSON Schema, for less.
EmailAddress = Annotated[str, AfterValidator(normalized_email), WithJsonSchema({"type": "string", "format": "email"})]
