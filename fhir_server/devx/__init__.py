"""Developer experience: the landing page, the OpenAPI document, request logs and the
development token command (docs/rest.md, "For developers")."""
