"""One Validator for the whole package: it loads the schema and the profiles once."""

from __future__ import annotations

import pytest

from fhir_server.validation import Validator


@pytest.fixture(scope="session")
def validator() -> Validator:
    return Validator()
