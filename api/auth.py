"""The bearer token of a REST request, checked by the one `Authenticator`
(domain/principals.py) that the WebSocket handshake uses too; failures become 401 problem
details with a `WWW-Authenticate` challenge."""

from __future__ import annotations

from sinal.api.problems import Problem
from sinal.domain.principals import TokenCache
from sinal.domain.tokens import Claims, TokenError

BEARER_CHALLENGE = 'Bearer realm="sinal"'


def unauthorized(code: str, detail: str) -> Problem:
    challenge = BEARER_CHALLENGE if code == "auth_required" else (
        f'{BEARER_CHALLENGE}, error="invalid_token", error_description="{code}"')
    return Problem(401, code, detail, headers={"WWW-Authenticate": challenge})


def bearer_token(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None when there is no such header."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def bearer_claims(tokens: TokenCache, header: str | None) -> Claims:
    """The verified claims of an Authorization header, or the 401 Problem."""
    token = bearer_token(header)
    if token is None:
        raise unauthorized("auth_required", "send Authorization: Bearer <JWT>")
    try:
        return tokens.claims(token)
    except TokenError as exc:
        raise unauthorized(exc.code, str(exc)) from exc
