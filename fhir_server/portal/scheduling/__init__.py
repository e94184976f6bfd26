"""Appointments: find, hold, book, request, cancel and reschedule (docs/portal.md,
"Appointments"). The rules are profiles/portal/scheduling.json (table.py)."""

from fhir_server.portal.scheduling.workflow import workflow

__all__ = ["workflow"]
