"""Settings read once from the environment and passed down explicitly (no singletons)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int, low: int, high: int) -> int:
    """An integer setting within [low, high]; anything else stops start-up with a clear message
    (a typo must not silently become the default)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _env_origins(name: str) -> tuple[str, ...]:
    """A comma-separated list of origins (`https://app.example.org`, no path); anything else
    stops start-up (a typo would silently block a browser app)."""
    out = []
    for item in os.environ.get(name, "").split(","):
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(f"{name}: {item.strip()!r} is not an origin like https://host[:port]")
        out.append(origin)
    return tuple(out)


def _env_smtp_url(name: str) -> str:
    """An SMTP URL, or empty; a malformed one stops start-up (mail would silently vanish)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
        raise ValueError(
            f"{name} must look like smtp://host[:port] (or smtps://, smtp+starttls://)"
        )
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise ValueError(f"{name} has a bad port") from None
    return raw


# MongoDB's BSON document limit: no stored resource can be larger.
MONGODB_DOCUMENT_LIMIT = 16 * 1024 * 1024

# Bounds of QUERY_MAX_TIME_MS: below 10 ms almost every search would fail; above 10 minutes a
# single request could hold a database connection for longer than any client waits.
QUERY_MAX_TIME_LOW = 10
QUERY_MAX_TIME_HIGH = 600_000


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
    # A request body (a Bundle can be large); one resource must also fit MongoDB's 16 MiB
    # document with its index entries, so a single resource has a lower limit.
    max_body_bytes: int = 64 * 1024 * 1024
    # 14 MiB: a 10 MiB attachment (profiles/portal/attachments.json) is 13.3 MiB in base64.
    max_resource_bytes: int = 14 * 1024 * 1024
    max_json_depth: int = 64
    # How long a request waits for the database before answering 503.
    db_timeout_ms: int = 3000
    # Per-query time limit (MongoDB `maxTimeMS`); past it a search answers 503 too-costly.
    query_max_time_ms: int = 5000
    # Every FHIR request needs a SMART access token. Only tests of the REST core turn it
    # off; production refuses to (see from_env).
    auth_required: bool = True
    # AuditEvents for every interaction and login (docs/access.md, "Audit"). AUDIT=0 is a
    # benchmark and diagnostic switch (bench/audit.py measures the cost); production
    # refuses it (see from_env).
    audit: bool = True
    # Browser origins allowed by CORS besides those of registered redirect URIs
    # (fhir_server/rest/cors.py).
    cors_origins: tuple[str, ...] = ()
    # Load shedding (docs/rest.md, "Load shedding"): HTTP requests in flight at once; one
    # more answers 503 with Retry-After at once instead of queueing without bound.
    max_in_flight: int = 64
    # AuditEvents waiting to be written; at the bound new requests answer 503 until the
    # log drains (docs/access.md, "Audit").
    audit_max_pending: int = 10_000
    # How long a socket read may wait on the database: past the query time limit, so only a
    # database that stopped answering trips it, and no request (or stop) waits forever.
    db_socket_timeout_ms: int = 30_000
    # Token subjects whose policy inputs (relationships, Consents, care teams) are cached,
    # checked against their epochs on every request (docs/access.md, "Policy inputs
    # cached per token subject"); 0 reads them on every request.
    policy_cache_size: int = 10_000

    @property
    def socket_timeout_ms(self) -> int:
        """The socket timeout in effect: never below a query's own time limit (+5 s)."""
        return max(self.db_socket_timeout_ms, self.query_max_time_ms + 5_000)

    # SIGTERM to exit, whatever the database does (docs/rest.md, "Stopping").
    stop_timeout_s: int = 30
    # The request log: one JSON line per request (request id, method, route template,
    # parameter names, status, latency, client id: fhir_server/devx/request_log.py),
    # replacing uvicorn's access log, whose line cost a quarter of the cheapest request's
    # CPU (docs/rest.md, "Request log"); ACCESS_LOG=0 turns it off.
    access_log: bool = True
    # How long an `Idempotency-Key` (and a conditional create's claim) is remembered: a
    # retry within it gets the first answer (docs/rest.md, "Idempotent creates").
    idempotency_key_ttl_s: int = 24 * 3600
    # Where patient emails go (docs/portal.md, "Notifications"): `smtp://[user:pw@]host[:port]`,
    # `smtps://...` or `smtp+starttls://...`; empty in development: .eml files under
    # DATA_DIR/outbox/ (production refuses to send without it).
    smtp_url: str = ""
    # The notification delivery worker of this process (NOTIFY_WORKER=0 leaves delivery to
    # the other processes on the database; the queue still fills).
    notify_worker: bool = True
    # $import jobs (fhir_server/exchange/imports): whether this process takes up jobs whose
    # lease ran out (a process that died or stopped), and how long a lease lasts (renewed
    # after each batch of lines), i.e. how soon a job resumes after its process died.
    import_worker: bool = True
    import_lease_s: int = 30

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
            max_resource_bytes=_env_int(
                "MAX_RESOURCE_BYTES", cls.max_resource_bytes, 1024, MONGODB_DOCUMENT_LIMIT
            ),
            query_max_time_ms=_env_int(
                "QUERY_MAX_TIME_MS", cls.query_max_time_ms, QUERY_MAX_TIME_LOW, QUERY_MAX_TIME_HIGH
            ),
            auth_required=_env_bool("AUTH_REQUIRED", True)
            or env.get("FHIR_ENV", "").lower() == "production",
            audit=_env_bool("AUDIT", True) or env.get("FHIR_ENV", "").lower() == "production",
            cors_origins=_env_origins("CORS_ORIGINS"),
            max_in_flight=_env_int("MAX_IN_FLIGHT", cls.max_in_flight, 1, 10_000),
            audit_max_pending=_env_int("AUDIT_MAX_PENDING", cls.audit_max_pending, 100, 1_000_000),
            db_socket_timeout_ms=_env_int(
                "DB_SOCKET_TIMEOUT_MS", cls.db_socket_timeout_ms, 1_000, 3_600_000
            ),
            policy_cache_size=_env_int("POLICY_CACHE_SIZE", cls.policy_cache_size, 0, 10_000_000),
            stop_timeout_s=_env_int("STOP_TIMEOUT_S", cls.stop_timeout_s, 3, 3_600),
            idempotency_key_ttl_s=_env_int(
                "IDEMPOTENCY_KEY_TTL_S", cls.idempotency_key_ttl_s, 60, 30 * 24 * 3600
            ),
            access_log=_env_bool("ACCESS_LOG", cls.access_log),
            smtp_url=_env_smtp_url("SMTP_URL"),
            notify_worker=_env_bool("NOTIFY_WORKER", cls.notify_worker),
            import_worker=_env_bool("IMPORT_WORKER", cls.import_worker),
            import_lease_s=_env_int("IMPORT_LEASE_S", cls.import_lease_s, 1, 3600),
        )

    @property
    def base_url(self) -> str:
        """The FHIR base URL, e.g. http://127.0.0.1:8080/fhir (no trailing slash)."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
