"""Prescriptions in the portal (issue 14; docs/portal.md, "Prescriptions"): refill and
renewal eligibility computed at read time (eligibility.py, a read-time view), refill
requests as Tasks owned by the chosen pharmacy with the refill count written in the same
transaction (workflow.py), and the `$refill` / `$renew` operations (operations.py). The
rules are data: profiles/portal/medications.json (table.py)."""
