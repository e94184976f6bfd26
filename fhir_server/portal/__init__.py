"""The patient-portal workflows on FHIR (../shared/DESIGN.md, "Portal workflows").

Each workflow is rules as data (`profiles/portal/*.json`, parsed fail-fast at start-up) plus
pure functions that apply them, riding on the one write path through `hooks.py`.
"""
