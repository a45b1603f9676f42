"""Bearer tokens with scopes and an optional project restriction, and the FastAPI security
dependency that checks them (``requires``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Optional

from fastapi import Depends, Request, Security, params
from fastapi.exceptions import HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from ._models import valid_project_id

log = logging.getLogger("prismq_queue.web")

SCOPES = frozenset({"read", "write", "admin"})


class Token:
    """What one bearer token may do.

    ``scopes``: any of ``"read"``, ``"write"``, ``"admin"``. They are independent: an endpoint
    needs exactly its scope (``admin`` does not imply ``read``), so list every scope a token needs.
    ``projects``: ``None`` for every project; a set of project ids to restrict the token to those
    projects' endpoints (``/projects/{project_id}/...``). A restricted token gets 403 on every
    endpoint that is not about one of its projects, since those show or touch all projects.
    """

    __slots__ = ("scopes", "projects", "name")

    def __init__(
        self,
        scopes: Iterable[str] = ("read",),
        projects: Optional[Iterable[str]] = None,
        *,
        name: Optional[str] = None,
    ) -> None:
        if isinstance(scopes, str):
            scopes = {scopes}
        s = frozenset(scopes)
        unknown = s - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) {sorted(unknown)}: use any of 'read', 'write', 'admin'")
        if not s:
            raise ValueError("a token needs at least one scope: 'read', 'write' or 'admin'")
        p: Optional[frozenset[str]] = None
        if projects is not None:
            if isinstance(projects, str):
                projects = {projects}
            p = frozenset(projects)
            bad = [x for x in p if not isinstance(x, str) or not valid_project_id(x)]
            if bad:
                raise ValueError(
                    f"invalid project id(s) {bad!r}: letters, digits, '.', '_' and '-', starting with a letter or digit"
                )
        self.scopes: frozenset[str] = s
        self.projects: Optional[frozenset[str]] = p
        self.name = name

    def allows_project(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects

    def __repr__(self) -> str:
        projects = None if self.projects is None else sorted(self.projects)
        return f"Token(scopes={sorted(self.scopes)!r}, projects={projects!r})"


_ALL = Token(SCOPES, None, name="auth-disabled")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class Auth:
    """The tokens an app accepts: ``Auth(tokens={"s3cret": Token(scopes={"read"})})``.

    Tokens are kept as SHA-256 digests and looked up by digest (no timing difference between a
    near miss and a far one). ``Auth.disabled()`` accepts every request with every scope: it has
    to be asked for, and building a router with it logs a warning.
    """

    def __init__(self, tokens: Mapping[str, Token]) -> None:
        if not isinstance(tokens, Mapping) or not tokens:
            raise ValueError("Auth needs at least one token; to turn checks off say so with Auth.disabled()")
        table: dict[bytes, Token] = {}
        for secret, token in tokens.items():
            if not isinstance(secret, str) or len(secret) < 1 or secret != secret.strip():
                raise ValueError("token secrets must be non-empty strings without surrounding spaces")
            if not isinstance(token, Token):
                raise TypeError(f"tokens maps secret -> web.Token, got {type(token).__name__}")
            table[_digest(secret)] = token
        self._tokens = table
        self.enabled = True

    @classmethod
    def disabled(cls) -> Auth:
        """No checks: every request may do everything. Meant for tests and trusted networks."""
        self = cls.__new__(cls)
        self._tokens = {}
        self.enabled = False
        return self

    def lookup(self, secret: Optional[str]) -> Optional[Token]:
        if not self.enabled:
            return _ALL
        if not secret:
            return None
        return self._tokens.get(_digest(secret))

    def __repr__(self) -> str:
        return "Auth.disabled()" if not self.enabled else f"Auth(<{len(self._tokens)} tokens>)"


def bearer_from_header(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    return credentials or None


def check(
    token: Optional[Token], had_credentials: bool, scope: str, project_id: Optional[str]
) -> Optional[tuple[int, str, dict[str, str]]]:
    """None when allowed, else (status, detail, headers)."""
    if token is None:
        if had_credentials:
            return 401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return 401, "a bearer token is required (Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"}
    if scope not in token.scopes:
        return 403, f"this token lacks the {scope!r} scope", {}
    if token.projects is not None:
        if project_id is None:
            return 403, "this token is restricted to some projects; this endpoint covers all of them", {}
        if project_id not in token.projects:
            return 403, "this token may not access this project", {}
    return None


class ScopeCheck(SecurityBase):
    """The security dependency of an endpoint: the request's bearer token must hold ``scope`` and,
    on a ``/projects/{project_id}/...`` endpoint, may be restricted to that project only.

    A ``SecurityBase``, so the OpenAPI schema lists the bearer scheme and each operation's scope.
    Refusals are ``HTTPException`` s (401 with ``WWW-Authenticate``, 403), answered by FastAPI's
    own handler where the route is not the router's. ``query_token``: the token may also come as
    ``?token=`` (Server-Sent Events: ``EventSource`` cannot set headers).
    """

    def __init__(self, auth: Auth, scope: str, *, query_token: bool = False) -> None:
        self.model = HTTPBearerModel(description="A token configured with web.Auth")
        self.scheme_name = "HTTPBearer"
        self.auth = auth
        self.scope = scope
        self.query_token = query_token

    async def __call__(self, request: Request) -> Token:
        secret = bearer_from_header(request.headers.get("authorization"))
        if secret is None and self.query_token:
            secret = request.query_params.get("token") or None
        token = self.auth.lookup(secret)
        refused = check(token, secret is not None, self.scope, request.path_params.get("project_id"))
        if refused is not None:
            status, detail, headers = refused
            raise HTTPException(status, detail, headers or None)
        assert token is not None  # for the type checker: check() refuses a missing token
        return token


async def _every_scope() -> Token:
    return _ALL


def requires(auth: Auth, scope: str, *, query_token: bool = False) -> params.Depends:
    """The dependency for an endpoint that needs ``scope``: ``dependencies=[requires(auth, "read")]``.

    With ``Auth.disabled()`` it is a plain dependency that allows everything, so the schema
    claims no security the API does not apply."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if not auth.enabled:
        allowed: params.Depends = Depends(_every_scope)
        return allowed
    checked: params.Depends = Security(ScopeCheck(auth, scope, query_token=query_token), scopes=[scope])
    return checked
