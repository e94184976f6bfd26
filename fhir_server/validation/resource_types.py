"""The resource types this server accepts.

A type is known when it is an R4 (4.0.1) resource type - taken from the official
``fhir.schema.json`` discriminator, so R4B-only types such as SubscriptionTopic are left out -
and the ``fhir.resources`` R4B models define it, so its structure can be checked. R4 types
that R4B dropped (the MedicinalProduct* and Substance* families beside Substance,
EffectEvidenceSynthesis, RiskEvidenceSynthesis) are therefore not known: a server may refuse
resource types it does not support (https://hl7.org/fhir/R4/http.html#general, 404 or 400).
"""

from __future__ import annotations

from fhir_server.validation import models
from fhir_server.validation.r4_schema import r4_resource_types

KNOWN_RESOURCE_TYPES: frozenset[str] = frozenset(t for t in r4_resource_types() if models.knows(t))
