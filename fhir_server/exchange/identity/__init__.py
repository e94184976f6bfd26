"""Patient identity: the identifier table, uniqueness, SSN masking, Patient/$match,
the identifier cross-walk ($ihe-pix), merges and account linking (docs/exchange.md)."""
