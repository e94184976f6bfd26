"""Record exchange: Patient $everything and Bulk Data $export (docs/exchange.md)."""
