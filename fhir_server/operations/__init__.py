"""FHIR operations: one registry table, one parameter parser, one module per operation."""
