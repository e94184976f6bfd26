"""Settings of the authorization server, on top of ``fhir_server.config.Settings``.

Lifetimes follow the SMART App Launch 2.2 guidance (short-lived codes and access tokens,
https://hl7.org/fhir/smart-app-launch/STU2.2/app-launch.html#step-4-app-exchanges-authorization-code-for-access-token).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fhir_server.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = PROJECT_ROOT / "profiles" / "access"
SEED_DIR = PROJECT_ROOT / "seed_data"


@dataclass(frozen=True)
class AuthConfig:
    """Everything the authorization server needs; built once from Settings."""

    base_url: str  # the FHIR base URL: the only accepted ``aud``
    production: bool = False
    database: str = "fhir"
    code_lifetime_s: int = 60
    access_token_lifetime_s: int = 3600
    offline_refresh_lifetime_s: int = 90 * 24 * 3600
    online_refresh_lifetime_s: int = 12 * 3600
    login_request_lifetime_s: int = 15 * 60
    # Client assertions may not claim an expiry further ahead than this (SMART Backend
    # Services: "exp ... no more than five minutes in the future").
    assertion_max_lifetime_s: int = 300
    # Retired signing keys stay published this long so tokens they signed still verify.
    retired_key_keep_s: int = 2 * 24 * 3600
    max_failures: int | None = None  # None: profiles/access/lockout.json
    lock_days: float | None = None
    policy_dir: Path = POLICY_DIR
    smart_style_url: str = ""
    # Production CAC/PIV: the header a TLS-terminating proxy sets to the verified client
    # certificate (PEM, URL-encoded, e.g. nginx $ssl_client_escaped_cert). Empty: disabled.
    client_cert_header: str = ""
    cookie_name: str = "smart_auth_tx"
    # Verified access tokens kept per process (smart_auth/token_cache.py); 0 turns the
    # cache off (every request re-verifies: signature and a database lookup).
    token_cache_size: int = 10_000
    # The revocation feed is read this often, and the cache serves nothing once its last
    # complete read started longer ago than revocation_bound_s: a revocation reaches every
    # process within that bound, and a database that stops answering stops the cache.
    revocation_poll_s: float = 0.2
    revocation_bound_s: float = 0.9
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.revocation_poll_s < self.revocation_bound_s:
            raise ValueError("revocation_poll_s must be above 0 and below revocation_bound_s")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> AuthConfig:
        env = os.environ
        values: dict[str, object] = {
            "base_url": settings.base_url,
            "production": settings.production,
            "database": settings.database,
            "client_cert_header": env.get("AUTH_CLIENT_CERT_HEADER", ""),
        }
        if "AUTH_LOCKOUT_MAX_FAILURES" in env:
            values["max_failures"] = int(env["AUTH_LOCKOUT_MAX_FAILURES"])
        if "AUTH_LOCKOUT_DAYS" in env:
            values["lock_days"] = float(env["AUTH_LOCKOUT_DAYS"])
        if env.get("AUTH_TOKEN_CACHE_SIZE", "").strip():
            size = int(env["AUTH_TOKEN_CACHE_SIZE"])
            if not 0 <= size <= 10_000_000:
                raise ValueError(f"AUTH_TOKEN_CACHE_SIZE must be 0 to 10000000, not {size}")
            values["token_cache_size"] = size
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def issuer(self) -> str:
        """The OpenID issuer: the origin, where ``/.well-known/openid-configuration`` lives."""
        return self.origin

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def token_endpoint(self) -> str:
        return self.url("/auth/token")

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")
