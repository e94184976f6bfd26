"""Bulk Data `$import` ("ping and pull"): partners' NDJSON files pulled, validated,
de-duplicated and stamped with Provenance (docs/exchange.md, "Imports with Provenance")."""
