"""Settings read once from the environment and passed down explicitly (no singletons)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Empty: start the embedded SecantusDB under data_dir.
    mongodb_uri: str = ""
    database: str = "fhir"
    data_dir: Path = field(default_factory=lambda: Path("data"))
    # Public base URL of the FHIR endpoint; derived from host/port when empty.
    public_base_url: str = ""
    # Production refuses development-only behaviour (seed logins, embedded database).
    production: bool = False
    # Seed an empty database at start-up (embedded development default).
    auto_seed: bool = True
    max_body_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 64
    # How long a request waits for the database before answering 503.
    db_timeout_ms: int = 3000
    query_max_time_ms: int = 5000
    # Every FHIR request needs a SMART access token. Only tests of the REST core turn it
    # off; production refuses to (see from_env).
    auth_required: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            host=env.get("HOST", cls.host),
            port=int(env.get("PORT", str(cls.port))),
            mongodb_uri=env.get("MONGODB_URI", ""),
            database=env.get("MONGODB_DATABASE", cls.database),
            data_dir=Path(env.get("DATA_DIR", "data")),
            public_base_url=env.get("PUBLIC_BASE_URL", ""),
            production=env.get("FHIR_ENV", "development").lower() == "production",
            auto_seed=_env_bool("AUTO_SEED", True),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", str(cls.max_body_bytes))),
            auth_required=_env_bool("AUTH_REQUIRED", True)
            or env.get("FHIR_ENV", "").lower() == "production",
        )

    @property
    def base_url(self) -> str:
        """The FHIR base URL, e.g. http://127.0.0.1:8080/fhir (no trailing slash)."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
