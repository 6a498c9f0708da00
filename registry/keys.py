"""API keys: created once and shown once, stored only as SHA-256, checked in constant time.

A key looks like `poise_<prefix>_<secret>`; the prefix locates the row, the hash of the
whole key proves it. Keys are 256-bit random, so a fast hash is as good as a slow one.

A process remembers the hashes of keys it verified for `VERIFIED_TTL` seconds (`recently_verified`),
so a busy API does not read the key table on every request; a key revoked in another process stops
working there within that time, one revoked in the same process at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from poise.registry.db import session_scope
from poise.registry.models import ApiKey

SCOPES = ("read", "submit", "predict", "admin")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write `last_used_at` at most this often per key
VERIFIED_TTL = 5.0  # seconds a verified key is admitted from memory

_verified: dict[tuple[str, str], tuple[float, KeyInfo]] = {}  # (db_url, key hash) -> (expiry, record)


@dataclass
class KeyInfo:
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.prefix, list(row.scopes), row.created_at, row.last_used_at,
                   row.revoked_at is not None)


def create_key(db_url: str, name: str, scopes: list[str]) -> tuple[KeyInfo, str]:
    """A new key; the plaintext is returned here and never again."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    prefix = secrets.token_hex(6)
    key = f"poise_{prefix}_{secrets.token_urlsafe(32)}"
    with session_scope(db_url) as session:
        row = ApiKey(name=name[:100], prefix=prefix, key_hash=_digest(key), scopes=sorted(set(scopes)))
        session.add(row)
        session.flush()
        return _info(row), key


def verify_key(db_url: str, key: str) -> KeyInfo | None:
    """The key's record if the key is valid and not revoked (and notes its use), else None."""
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "poise":
        return None
    digest = _digest(key)
    with session_scope(db_url) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
            _verified.pop((db_url, digest), None)
            return None
        now = datetime.now(UTC)
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            row.last_used_at = now
        info = _info(row)
    _verified[(db_url, digest)] = (time.monotonic() + VERIFIED_TTL, info)
    return info


def recently_verified(db_url: str, key: str) -> KeyInfo | None:
    """The key's record if `verify_key` admitted it in this process less than `VERIFIED_TTL` seconds ago."""
    found = _verified.get((db_url, _digest(key)))
    if found is None or found[0] < time.monotonic():
        return None
    return found[1]


def key_by_id(db_url: str, key_id: int) -> KeyInfo | None:
    with session_scope(db_url) as session:
        row = session.get(ApiKey, key_id)
        return None if row is None else _info(row)


def list_keys(db_url: str) -> list[KeyInfo]:
    with session_scope(db_url) as session:
        return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(db_url: str, key_id: int) -> bool:
    with session_scope(db_url) as session:
        row = session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = datetime.now(UTC)
        digest = row.key_hash
    _verified.pop((db_url, digest), None)  # after the commit, so no check can remember it again
    return True


def has_keys(db_url: str) -> bool:
    with session_scope(db_url) as session:
        return session.scalar(select(ApiKey.id).limit(1)) is not None
