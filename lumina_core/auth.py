"""Who may do what: API keys of one project with scopes, and the open mode of a fresh local install.

A request carries its key as ``Authorization: Bearer <key>`` or ``x-lumina-api-key: <key>`` (HTTP
headers or gRPC metadata). Until the first key is created, Lumina runs open: every request acts on
the project it names (``?project=`` or ``x-lumina-project``, else ``default``) with every scope — which
the server allows only on a loopback address unless started ``--insecure``. Once any key exists
(revoked ones too), every request needs a live key, and acts on that key's project only.
Keys are looked up on every request, so a revoked key stops working at once in every process.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.storage import projects

DEFAULT_PROJECT = "default"
SCOPES = ("ingest", "read", "admin")
KEY_PREFIX = "lum_"
PROJECT_HEADER = "x-lumina-project"
PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class InvalidProjectId(ValueError):
    pass


class AuthError(Exception):
    status = 401
    code = "unauthenticated"


class Unauthenticated(AuthError):
    """No key, or a key that is unknown or revoked (HTTP 401, gRPC ``UNAUTHENTICATED``)."""


class AuthUnavailable(AuthError):
    """Keys cannot be checked now (the database is down): worth a retry (HTTP 503, gRPC ``UNAVAILABLE``)."""

    status = 503
    code = "unavailable"


class Forbidden(AuthError):
    """A valid key without the scope or project asked for (HTTP 403, gRPC ``PERMISSION_DENIED``)."""

    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Access:
    project_id: str
    scopes: frozenset[str]
    key_id: int | None = None
    """``None`` in open mode."""


@dataclass(frozen=True)
class NewKey:
    secret: str
    key_hash: str
    prefix: str


def new_key() -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(secret, hash_key(secret), secret[: len(KEY_PREFIX) + 6])


def hash_key(secret: str) -> str:
    # Keys are 256 random bits: a plain SHA-256 cannot be brute-forced, and it allows an indexed lookup.
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    return scopes


def check_project_id(project_id: str) -> str:
    if not PROJECT_ID.fullmatch(project_id):
        raise InvalidProjectId(
            "a project id is 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return project_id


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_from_headers(get: Callable[[str], str | None]) -> str | None:
    """The API key in ``Authorization: Bearer …`` or ``x-lumina-api-key`` (``get`` looks up a lowercase name)."""
    authorization = get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return get("x-lumina-api-key") or None


GRANTS_KEPT_SECONDS = 600.0
"""While the database is unreachable, a request is let in on what the same key was last granted this
recently (so intake keeps accepting into a broker queue through a database restart); refused otherwise."""
GRANTS_KEPT = 10_000


class Authenticator:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._keys_exist = False  # once true, true for good: keys are never deleted
        self._granted: dict[tuple[str | None, str, str | None], tuple[float, Access]] = {}

    async def keys_exist(self) -> bool:
        if not self._keys_exist:
            self._keys_exist = await projects.any_keys(self.engine)
        return self._keys_exist

    async def access(self, key: str | None, scope: str, project_id: str | None = None) -> Access:
        """The access ``key`` grants for ``scope`` on ``project_id`` (default: the key's own project).

        Raises an :class:`AuthError`, or :class:`InvalidProjectId`.
        """
        if project_id is not None:
            check_project_id(project_id)
        asked = (hash_key(key) if key else None, scope, project_id)
        try:
            access = await self._access(key, scope, project_id)
        except (SQLAlchemyError, OSError) as exc:  # a refused connection comes through as a bare OSError
            granted = self._granted.get(asked)
            if granted is not None and time.monotonic() - granted[0] < GRANTS_KEPT_SECONDS:
                return granted[1]
            raise AuthUnavailable(f"API keys cannot be checked: {exc.__class__.__name__}") from exc
        if len(self._granted) >= GRANTS_KEPT:
            self._granted.clear()
        self._granted[asked] = (time.monotonic(), access)
        return access

    async def _access(self, key: str | None, scope: str, project_id: str | None) -> Access:
        if key is None:
            if await self.keys_exist():
                raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>'")
            return Access(project_id or DEFAULT_PROJECT, frozenset(SCOPES))
        found = await projects.find_live_key(self.engine, hash_key(key))
        if found is None:
            raise Unauthenticated("the API key is unknown or revoked")
        if project_id is not None and project_id != found["project_id"]:
            raise Forbidden(f"this key belongs to project {found['project_id']!r}, not {project_id!r}")
        granted = frozenset(found["scopes"])
        if scope not in granted and "admin" not in granted:
            raise Forbidden(f"this key lacks the {scope!r} scope (it has: {', '.join(sorted(granted))})")
        return Access(found["project_id"], granted, found["id"])
