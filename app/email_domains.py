"""Faster email validation: email_validator's check of an address's domain, memoized.

pydantic's EmailStr runs email_validator on every address. Two thirds of that time (about 14 of
20 µs on a small machine) goes to checking the domain: IDNA tables, character by character. The
result depends on the domain alone, and jobs come with the same few domains over and over, so
it is remembered per domain. Invalid domains raise as before (exceptions are not remembered).
Caveat: changes an application makes to email_validator.SPECIAL_USE_DOMAIN_NAMES at run time
do not reach domains already checked (we make none).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

REMEMBERED_DOMAINS = 4_096


def memoize_domain_checks() -> None:
    """Put the memoized domain check in email_validator's place (once; a no-op without it)."""
    try:
        module = importlib.import_module("email_validator.validate_email")
    except ImportError:
        return
    original = module.validate_email_domain_name
    if getattr(original, "memoized", False):
        return

    @functools.lru_cache(maxsize=REMEMBERED_DOMAINS)
    def remembered(domain: str, test_environment: bool, globally_deliverable: bool) -> Any:
        return original(domain, test_environment=test_environment, globally_deliverable=globally_deliverable)

    def check(domain: str, test_environment: bool = False, globally_deliverable: bool = True) -> Any:
        return dict(remembered(domain, test_environment, globally_deliverable))  # a copy: callers own it

    check.memoized = True  # type: ignore[attr-defined]
    module.validate_email_domain_name = check  # type: ignore[attr-defined]
