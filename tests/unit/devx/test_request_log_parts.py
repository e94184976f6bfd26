"""The request log's route templates and parameter names, and the database state lines."""

from __future__ import annotations

import json
import logging

from pymongo.errors import ServerSelectionTimeoutError

from fhir_server.devx.db_health import DatabaseHealth
from fhir_server.devx.request_log import param_names
from fhir_server.devx.route_template import for_table
from fhir_server.operations.table import TABLE
from fhir_server.validation import KNOWN_RESOURCE_TYPES

T = for_table(TABLE, KNOWN_RESOURCE_TYPES)


def test_templates_keep_only_the_servers_words() -> None:
    assert T.template("/fhir/Patient/abc", None) == "/fhir/Patient/{id}"
    assert T.template("/fhir/Patient/abc/_history/3", None) == "/fhir/Patient/{id}/_history/{vid}"
    assert T.template("/fhir/Patient/abc/$everything", None) == "/fhir/Patient/{id}/$everything"
    assert T.template("/fhir/$export-status/job1", None) == "/fhir/$export-status/{value}"
    assert T.template("/fhir/John Smith/x", None) == "/fhir/{value}/{value}"
    assert T.template("/fhir/Patient/$nosuch", None) == "/fhir/Patient/{operation}"
    assert T.template("/auth/token", "/auth/token") == "/auth/token"
    assert T.template("/nowhere", None) == "{unmatched}"


def test_parameter_names_never_values() -> None:
    assert param_names(b"family=Carter&birthdate=ge1980&family=X") == ["family", "birthdate"]
    assert param_names(b"John%20Smith=1&_count=2") == ["{other}", "_count"]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


def test_an_outage_is_one_line_each_way() -> None:
    log = logging.getLogger("tests.devx.database")
    handler = Lines()
    log.addHandler(handler)
    log.propagate = False
    health = DatabaseHealth(log)
    health.succeeded()
    for _ in range(50):
        health.failed(ServerSelectionTimeoutError("gone"))
    health.succeeded()
    health.succeeded()
    assert [x["state"] for x in handler.lines] == ["unreachable", "reachable"]
    assert handler.lines[1]["failed_requests"] == 50
    log.removeHandler(handler)
