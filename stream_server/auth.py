"""Platform API key and short-lived session tokens (JWT HS256: ``sub`` session, ``role``, ``exp``, ``jti``).

A publisher token may send media and captions to one session; a clinician token may read one
session's events and ask for checkpoints. A token never opens another session.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

from mllmdr_core.errors import AuthError
from stream_server.protocol import Role

ISSUER = "mllmdr-server"
MIN_JWT_SECRET_CHARS = 16  # Settings rejects shorter secrets at start-up


def auth_error(code: str, message: str) -> AuthError:
    err = AuthError(message)
    err.code = code  # "auth_failed" | "token_expired" | "forbidden"
    return err


@dataclass(frozen=True)
class Claims:
    session_id: str
    role: Role
    exp: float
    jti: str


class TokenIssuer:
    """Mints and verifies session tokens with one HMAC secret."""

    def __init__(self, secret: str, api_key: str) -> None:
        if len(secret) < MIN_JWT_SECRET_CHARS:
            raise ValueError(f"JWT secret must be at least {MIN_JWT_SECRET_CHARS} characters")
        self._secret = secret
        self._api_key = api_key

    def check_api_key(self, presented: str | None) -> None:
        if not presented or not hmac.compare_digest(presented.encode(), self._api_key.encode()):
            raise auth_error("auth_failed", "missing or invalid API key")

    def is_api_key(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented).encode(), self._api_key.encode())

    def mint(self, session_id: str, role: Role, ttl_s: float) -> tuple[str, float]:
        now = time.time()
        exp = now + ttl_s
        payload = {
            "sub": session_id,
            "role": role,
            "iat": int(now),
            "exp": int(exp),
            "iss": ISSUER,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(payload, self._secret, algorithm="HS256"), float(int(exp))

    def verify(self, token: str | None, session_id: str, roles: tuple[Role, ...]) -> Claims:
        """Claims of a valid token for ``session_id`` with one of ``roles``; else ``AuthError``."""
        if not token:
            raise auth_error("auth_failed", "missing token")
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "jti", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise auth_error("token_expired", "token expired") from exc
        except jwt.PyJWTError as exc:
            raise auth_error("auth_failed", "invalid token") from exc
        if data.get("sub") != session_id:
            raise auth_error("forbidden", "token is for another session")
        role = data.get("role")
        if role not in roles:
            raise auth_error("forbidden", f"role {role!r} may not do this")
        return Claims(session_id=session_id, role=role, exp=float(data["exp"]), jti=str(data["jti"]))
