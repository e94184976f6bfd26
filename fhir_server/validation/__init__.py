"""Resource validation (https://hl7.org/fhir/R4/validation.html).

- ``models``: structure and cardinality with the ``fhir.resources`` R4B models (the only
  module that imports them).
- ``r4_schema``: code sets and primitive formats with the official R4 ``fhir.schema.json``.
- ``profiles``: the project's own JSON Schema profiles, selected by ``meta.profile``.
- ``validator``: the ``Validator`` the server calls on every write.
"""

from fhir_server.validation.resource_types import KNOWN_RESOURCE_TYPES
from fhir_server.validation.validator import Validator

__all__ = ["KNOWN_RESOURCE_TYPES", "Validator"]
