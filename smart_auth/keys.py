"""The server's signing keys: generated at first start, kept in MongoDB, rotated by ``kid``.

Published as a JWK Set (RFC 7517 section 5) at ``/auth/jwks``. One key is current and
signs; retired keys stay in the set until the tokens they signed have expired, so every
server process verifies tokens signed by any other. Keys are RSA 2048 for RS256, the
algorithm OpenID Connect requires for ID tokens (OIDC Core 1.0, section 15.1).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from joserfc.jwk import KeySet, RSAKey

from smart_auth.store import AuthStore, aware, now

ALG = "RS256"
META_ID = "signing"
RELOAD_MIN_INTERVAL_S = 5.0


def generate_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"alg": ALG, "use": "sig"}, auto_kid=True)


class SigningKeys:
    """The key set as this process last read it from the database."""

    def __init__(self, store: AuthStore, retired_keep_s: float) -> None:
        self.store = store
        self.retired_keep_s = retired_keep_s
        self._lock = threading.Lock()
        self._current: RSAKey | None = None
        self._keys: dict[str, RSAKey] = {}
        self._loaded_at = 0.0

    def bootstrap(self) -> None:
        """Create the first key unless another process already did, then load the set."""
        if self.store.meta.find_one({"_id": META_ID}) is None:
            key = generate_key()
            self._insert(key)
            # $setOnInsert: when processes race, exactly one key becomes current.
            self.store.meta.update_one(
                {"_id": META_ID}, {"$setOnInsert": {"kid": key.kid}}, upsert=True
            )
        self.reload()

    def rotate(self) -> str:
        """Make a new key current; the old one is retired but still verifies."""
        key = generate_key()
        self._insert(key)
        old = self.store.meta.find_one_and_update(
            {"_id": META_ID}, {"$set": {"kid": key.kid}}, upsert=True
        )
        if old is not None:
            self.store.keys.update_one({"_id": old["kid"]}, {"$set": {"retired_at": now()}})
        self.reload()
        return str(key.kid)

    def _insert(self, key: RSAKey) -> None:
        self.store.keys.insert_one(
            {"_id": key.kid, "alg": ALG, "jwk": key.as_dict(private=True), "created": now()}
        )

    def reload(self) -> None:
        with self._lock:
            pointer = self.store.meta.find_one({"_id": META_ID})
            cutoff = now() - timedelta(seconds=self.retired_keep_s)
            keys: dict[str, RSAKey] = {}
            for doc in self.store.keys.find({}):
                retired = doc.get("retired_at")
                if retired is not None and aware(retired) < cutoff:
                    continue
                keys[doc["_id"]] = RSAKey.import_key(doc["jwk"])
            self._keys = keys
            if pointer is not None and pointer["kid"] in keys:
                self._current = keys[pointer["kid"]]
            self._loaded_at = time.monotonic()

    @property
    def current(self) -> RSAKey:
        if self._current is None:
            raise RuntimeError("signing keys not loaded")
        return self._current

    def verification_set(self, kid: str | None) -> KeySet:
        """Keys to verify with; an unknown ``kid`` (another process rotated) reloads once."""
        stale = time.monotonic() - self._loaded_at > RELOAD_MIN_INTERVAL_S
        if kid is not None and kid not in self._keys and stale:
            self.reload()
        return KeySet(list(self._keys.values()))

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self._keys.values()]}
