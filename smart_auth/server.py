"""The authorization server: MongoDB state, signing keys, policy and authlib, wired once.

One :class:`AuthServer` per app process, created by :func:`smart_auth.install`. It opens
its synchronous MongoDB client lazily (the embedded database's URI is only known after the
app's lifespan started it) and every method that touches MongoDB is synchronous: routes
call them through ``anyio.to_thread``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from fhir_server.config import Settings
from smart_auth import accounts, clients, manage
from smart_auth.config import SEED_DIR, AuthConfig
from smart_auth.grants import AuthorizationCodeGrant, ClientCredentialsGrant, RefreshTokenGrant
from smart_auth.keys import SigningKeys
from smart_auth.launch import Launches
from smart_auth.linking import IdentityVerifier
from smart_auth.models import AuthContext, GrantSubject
from smart_auth.oauth import SmartAuthorizationServerBase
from smart_auth.oidc import id_token
from smart_auth.policy import AccessPolicy
from smart_auth.revocations import Revocation, RevocationWatch
from smart_auth.rfc7009 import RevocationEndpoint
from smart_auth.rfc7523 import JwksFetcher, PrivateKeyJWT
from smart_auth.rfc7636 import S256CodeChallenge
from smart_auth.rfc7662 import IntrospectionEndpoint
from smart_auth.rfc9068 import issue_access_token, verified
from smart_auth.scopes import split
from smart_auth.store import AuthStore, digest, later, now
from smart_auth.token_cache import Entry, TokenCache

log = logging.getLogger("smart_auth")
# How long the registered redirect URIs (the CORS origins) are kept between lookups: a
# client registered by another process is allowed from its origin within this.
REDIRECT_URIS_CACHE_S = 30.0


class _OAuth(SmartAuthorizationServerBase):
    """authlib's server with our client lookup and token generator."""

    def __init__(self, smart: AuthServer) -> None:
        super().__init__()
        self.smart = smart

    def query_client(self, client_id: str) -> clients.SmartClient | None:
        return clients.load_client(self.smart.store, client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        # Tokens are recorded as they are generated (rfc9068.issue_access_token and
        # AuthServer.generate_token), so a token never exists without its record.
        return None


class AuthServer:
    def __init__(
        self,
        settings: Settings,
        config: AuthConfig | None = None,
        *,
        jwks_fetcher: JwksFetcher | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or AuthConfig.from_settings(settings)
        self.policy = AccessPolicy.load(
            self.config.policy_dir,
            max_failures=self.config.max_failures,
            lock_days=self.config.lock_days,
        )
        self._jwks_fetcher = jwks_fetcher
        self._lock = threading.Lock()
        self._store: AuthStore | None = None
        self._keys: SigningKeys | None = None
        self.oauth = _OAuth(self)
        # Optional: maps ["Patient/<id>", ...] to display names (e.g. from the FHIR store).
        self.patient_name_resolver: Callable[[list[str]], dict[str, str]] | None = None
        # Optional: maps "Practitioner/<id>" to the "Patient/<id>" of its care teams, which
        # the consent page lists for a clinician (fhir_server/consent_directory.py).
        self.care_team_resolver: Callable[[str], list[str]] | None = None
        # Matches an unlinked account's answers to one Patient (linking.py); set by the app.
        self.identity_verifier: IdentityVerifier | None = None
        # Optional: receives each login event row (the FHIR server turns it into an
        # AuditEvent); set before or after start.
        self.audit_hook: Callable[[dict[str, Any]], None] | None = None
        self._redirect_uris: tuple[float, list[str]] | None = None
        cfg = self.config
        self.token_cache: TokenCache | None = (
            TokenCache(cfg.token_cache_size, stale_after_s=cfg.revocation_bound_s)
            if cfg.token_cache_size > 0
            else None
        )
        self._watch: RevocationWatch | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._store is not None

    def start(self, mongo_uri: str) -> None:
        """Open the database, create indexes, load (or create) signing keys. Idempotent."""
        with self._lock:
            if self._store is not None:
                return
            store = AuthStore(mongo_uri, self.config.database)
            store.on_event = self._on_auth_event
            store.on_revoke = self._on_revoke
            store.ensure_indexes()
            keys = SigningKeys(store, self.config.retired_key_keep_s)
            keys.bootstrap()
            self._keys = keys
            self.launches = Launches(store)
            self._register(store)
            self._store = store
            if self.token_cache is not None:
                self._watch = RevocationWatch(
                    store, self.token_cache, self.config.revocation_poll_s
                )
                self._watch.start()
        if self.settings.auto_seed and not self.config.production:
            try:
                self.seed_development()
            except Exception:  # the FHIR server stays useful without the dev logins
                log.exception("creating the development logins and clients failed")

    def _on_auth_event(self, row: dict[str, Any]) -> None:
        hook = self.audit_hook
        if hook is not None:
            hook(row)

    def _register(self, store: AuthStore) -> None:
        oauth = self.oauth
        oauth.register_client_auth_method(
            "private_key_jwt", PrivateKeyJWT(store, self.config, self._jwks_fetcher)
        )
        oauth.register_token_generator("default", self.generate_token)
        oauth.register_grant(AuthorizationCodeGrant, [S256CodeChallenge()])
        oauth.register_grant(RefreshTokenGrant)
        oauth.register_grant(ClientCredentialsGrant)
        oauth.register_endpoint(RevocationEndpoint)
        oauth.register_endpoint(IntrospectionEndpoint)

    def _on_revoke(self, events: list[Revocation]) -> None:
        # This process drops at once what it revoked; the others read the feed.
        if self.token_cache is not None:
            self.token_cache.drop(events)

    def close(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.stop()
            if self._store is not None:
                self._store.close()
                self._store = None

    @property
    def store(self) -> AuthStore:
        if self._store is None:
            raise RuntimeError("the authorization server has not started")
        return self._store

    @property
    def keys(self) -> SigningKeys:
        if self._keys is None:
            raise RuntimeError("the authorization server has not started")
        return self._keys

    # -- development data ---------------------------------------------------------------

    def seed_development(self) -> tuple[int, int]:
        """Create the logins of seed_data/logins.json and the clients of clients.json."""
        if self.config.production:
            raise RuntimeError("refusing to create development logins and clients in production")
        n_users = accounts.seed_accounts(
            self.store, SEED_DIR / "logins.json", production=self.config.production
        )
        n_clients = clients.register_clients_file(self.store, SEED_DIR / "clients.json")
        self._redirect_uris = None
        return n_users, n_clients

    def registered_redirect_uris(self) -> list[str]:
        """Every client's redirect URIs, cached for REDIRECT_URIS_CACHE_S (a CORS check runs
        on every browser request; registrations change rarely)."""
        cached, clock = self._redirect_uris, time.monotonic()
        if cached is not None and cached[0] > clock:
            return cached[1]
        uris = clients.registered_redirect_uris(self.store)
        self._redirect_uris = (clock + REDIRECT_URIS_CACHE_S, uris)
        return uris

    # -- tokens -------------------------------------------------------------------------

    def generate_token(
        self,
        grant_type: str,
        client: clients.SmartClient,
        user: GrantSubject | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """The token response (SMART 2.2 "Response body": ``access_token token_type
        expires_in scope`` plus ``patient``, ``encounter``, ``need_patient_banner``,
        ``smart_style_url``, ``id_token`` and ``refresh_token`` as they apply)."""
        granted = " ".join(split(scope))
        grant_id = user.grant_id if user else self.new_grant(client.client_id, None, granted)
        token = self._token_response(
            client, user, granted, grant_id, expires_in, include_refresh_token
        )
        # A grant revoked while these records were written (a refresh racing its own
        # replay, a client disabled as it authenticated) missed them: revoke it again now
        # that they exist, so nothing issued under a revoked grant stays valid.
        grant = self.store.grants.find_one({"_id": grant_id}, {"revoked": 1})
        if grant is None or grant.get("revoked"):
            self.store.revoke_grant(grant_id, "issued while the grant was revoked")
        elif user is not None:
            manage.touch(self, grant_id)  # "last used" on /auth/manage
        return token

    def _token_response(
        self,
        client: clients.SmartClient,
        user: GrantSubject | None,
        granted: str,
        grant_id: str,
        expires_in: int | None,
        include_refresh_token: bool,
    ) -> dict[str, Any]:
        cfg, words = self.config, granted.split()
        lifetime = expires_in or cfg.access_token_lifetime_s
        token: dict[str, Any] = {
            "access_token": issue_access_token(
                self.keys,
                self.store,
                cfg,
                client_id=client.client_id,
                scope=granted,
                grant_id=grant_id,
                subject=user,
                lifetime_s=lifetime,
            ),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": granted,
        }
        if user is None:
            return token
        if user.patient:
            token["patient"] = user.patient
        if user.encounter:
            token["encounter"] = user.encounter
        token["need_patient_banner"] = user.need_patient_banner
        token["smart_style_url"] = cfg.smart_style_url or cfg.url("/auth/smart-style.json")
        if "openid" in words:
            token["id_token"] = id_token(self.keys, cfg, user, client.client_id, words)
        offline = "offline_access" in words
        if include_refresh_token and (offline or "online_access" in words):
            refresh = secrets.token_urlsafe(32)
            life = cfg.offline_refresh_lifetime_s if offline else cfg.online_refresh_lifetime_s
            self.store.refresh.insert_one(
                {
                    "_id": digest(refresh),
                    "grant_id": grant_id,
                    "client_id": client.client_id,
                    "scope": granted,
                    "subject": user.to_doc(),
                    "status": "active",
                    "issued_at": now(),
                    "expires_at": later(life),
                }
            )
            token["refresh_token"] = refresh
        return token

    def new_grant(self, client_id: str, username: str | None, scope: str) -> str:
        grant_id = secrets.token_urlsafe(18)
        self.store.grants.insert_one(
            {
                "_id": grant_id,
                "client_id": client_id,
                "username": username,
                "scope": scope,
                "created": now(),
                "revoked": False,
            }
        )
        return grant_id

    def cached_access_token(self, token: str) -> AuthContext | None:
        """The context of a token this process verified and nothing has revoked since, or
        None: no I/O, safe on the event loop (smart_auth/token_cache.py)."""
        cache = self.token_cache
        return cache.get(token) if cache is not None else None

    def verify_access_token(self, token: str) -> AuthContext:
        """Synchronous validation (signature, claims, the token record); the result is
        cached by the exact token string. See :func:`smart_auth.verify_access_token`."""
        cache = self.token_cache
        generation = cache.generation if cache is not None else 0
        context, username = verified(self.keys, self.store, self.config, token)
        if username:
            # Once per token and process (the cache holds it after): the grant's last use.
            manage.touch(self, context.grant_id)
        if cache is not None:
            entry = Entry(context, username, context.expires_at.timestamp())
            cache.put(token, entry, generation)
        return context

    def patient_names(self, refs: list[str]) -> dict[str, str]:
        """Display names for patient choices: the resolver the app set, else account names."""
        if self.patient_name_resolver is not None:
            try:
                return self.patient_name_resolver(refs)
            except Exception:
                log.exception("patient name resolver failed")
        names = {ref: ref.removeprefix("Patient/") for ref in refs}
        for doc in self.store.users.find(
            {"fhirUser": {"$in": refs}}, projection={"fhirUser": 1, "name": 1}
        ):
            names[doc["fhirUser"]] = doc.get("name") or names[doc["fhirUser"]]
        return names
