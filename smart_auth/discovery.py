"""SMART discovery: ``/.well-known/smart-configuration`` and the CapabilityStatement's
``rest.security`` (SMART App Launch 2.2, "Conformance", sections 2.1 and 2.2; the
``oauth-uris`` extension of SMART 1.0 kept for older clients).
"""

from __future__ import annotations

from typing import Any

from smart_auth.config import AuthConfig

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-ehr-patient",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "patient/*.write",
    "user/*.cruds",
    "user/*.rs",
    "user/*.read",
    "user/*.write",
    "system/*.rs",
    "system/*.read",
]
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
BRAND_IDENTIFIER = {"system": "urn:ietf:rfc:3986", "value": "urn:mhs:portal:brand"}


def smart_configuration(config: AuthConfig) -> dict[str, Any]:
    """Every REQUIRED and RECOMMENDED field of SMART 2.2 section 2.1, absolute URLs."""
    return {
        "issuer": config.issuer,
        "jwks_uri": config.url("/auth/jwks"),
        "authorization_endpoint": config.url("/auth/authorize"),
        "token_endpoint": config.token_endpoint,
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "management_endpoint": config.url("/auth/manage"),
        "introspection_endpoint": config.url("/auth/introspect"),
        "revocation_endpoint": config.url("/auth/revoke"),
        "user_access_brand_bundle": config.url("/auth/brands"),
        "user_access_brand_identifier": BRAND_IDENTIFIER,
        "capabilities": CAPABILITIES,
        "code_challenge_methods_supported": ["S256"],
    }


def security_element(config: AuthConfig) -> dict[str, Any]:
    """``CapabilityStatement.rest.security`` with SMART-on-FHIR and ``oauth-uris``."""
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": "token", "valueUri": config.token_endpoint},
                    {"url": "authorize", "valueUri": config.url("/auth/authorize")},
                    {"url": "manage", "valueUri": config.url("/auth/manage")},
                    {"url": "introspect", "valueUri": config.url("/auth/introspect")},
                    {"url": "revoke", "valueUri": config.url("/auth/revoke")},
                ],
            }
        ],
        "description": (
            "SMART App Launch 2.2. Discovery: "
            + config.base_url
            + "/.well-known/smart-configuration"
        ),
    }


def brand_bundle(config: AuthConfig) -> dict[str, Any]:
    """A User Access Brand Bundle (SMART 2.2, "User-access Brands and Endpoints")."""
    endpoint_id, org_id = "mhs-fhir-endpoint", "mhs-portal-brand"
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": config.url(f"/auth/brands#{org_id}"),
                "resource": {
                    "resourceType": "Organization",
                    "id": org_id,
                    "identifier": [BRAND_IDENTIFIER],
                    "active": True,
                    "name": "Military Health System patient portal",
                    "endpoint": [{"reference": f"Endpoint/{endpoint_id}"}],
                },
            },
            {
                "fullUrl": config.url(f"/auth/brands#{endpoint_id}"),
                "resource": {
                    "resourceType": "Endpoint",
                    "id": endpoint_id,
                    "status": "active",
                    "connectionType": {
                        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                        "code": "hl7-fhir-rest",
                    },
                    "name": "MHS FHIR R4 endpoint",
                    "payloadType": [{"text": "FHIR R4"}],
                    "address": config.base_url,
                },
            },
        ],
    }
