"""The dashboard's settings: tokens per role, the session secret, where to listen.

    STREAMQ_DASHBOARD_TOKENS="viewer:<token>,operator:<token>"   (several per role allowed)
    STREAMQ_DASHBOARD_SECRET=<secret>     optional: signs session cookies; by default a key
                                          derived from the tokens (so every instance that
                                          has the same tokens accepts the same sessions)

Tokens come from the environment only (never from a flag: command lines are visible to
every user of the machine) and are never logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..keys import check_queue_name

ROLES = ("viewer", "operator")
MIN_TOKEN_CHARS = 16
DEFAULT_PORT = 8080
DEFAULT_SESSION_HOURS = 12.0
DEFAULT_RESCAN_S = 300.0
LOCAL_HOST = "127.0.0.1"
TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"


@dataclass(frozen=True, slots=True)
class Token:
    role: str
    value: str = field(repr=False)


def parse_tokens(text: str) -> tuple[Token, ...]:
    """``viewer:<token>,operator:<token>`` -> tokens; a clear one-line error (never
    showing a token) for anything else."""
    out: list[Token] = []
    for n, item in enumerate((p.strip() for p in text.split(",")), 1):
        if not item:
            continue
        role, sep, value = item.partition(":")
        role, value = role.strip().lower(), value.strip()
        if not sep or role not in ROLES:
            raise ConfigError(f"STREAMQ_DASHBOARD_TOKENS item {n} must be role:token with role "
                              f"one of {', '.join(ROLES)}")
        if len(value) < MIN_TOKEN_CHARS or any(c.isspace() for c in value):
            raise ConfigError(f"STREAMQ_DASHBOARD_TOKENS item {n} ({role}): the token must be at "
                              f"least {MIN_TOKEN_CHARS} characters without spaces; {TOKEN_HINT}")
        out.append(Token(role, value))
    values = [t.value for t in out]
    if len(set(values)) != len(values):
        raise ConfigError("STREAMQ_DASHBOARD_TOKENS has the same token twice: give each role "
                          "its own")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    tokens: tuple[Token, ...] = ()
    secret: bytes = field(default=b"", repr=False)
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    queues: tuple[str, ...] = ()
    """Only these queues; empty: every queue found in Redis (discovery.py)."""
    insecure_local: bool = False
    """No tokens: everyone who can reach 127.0.0.1 is an operator (actor 'local')."""
    rescan_s: float = DEFAULT_RESCAN_S
    """Seconds between SCANs for new queues (0: only at start)."""
    session_hours: float = DEFAULT_SESSION_HOURS
    allowed_origins: tuple[str, ...] = ()
    """Origins accepted on actions besides the dashboard's own (a reverse proxy's)."""
    secure_cookies: bool = False
    page_size: int = 50
    sse_buffer: int = 32
    """Messages buffered per live client; past that the client gets one 'resync'."""
    max_sse_clients: int = 200
    breaker_scan_s: float = 30.0
    """How long the breakers page trusts its last SCAN for breaker hashes (0: every view)."""

    @classmethod
    def build(cls, *, env: Mapping[str, str] | None = None, host: str | None = None,
              port: int | None = None, queues: Sequence[str] = (), insecure_local: bool = False,
              rescan_s: float = DEFAULT_RESCAN_S, session_hours: float = DEFAULT_SESSION_HOURS,
              allowed_origins: Sequence[str] = (), secure_cookies: bool = False) -> DashboardConfig:
        env = os.environ if env is None else env
        tokens = parse_tokens(env.get("STREAMQ_DASHBOARD_TOKENS", ""))
        if not tokens and not insecure_local:
            raise ConfigError("refusing to start without STREAMQ_DASHBOARD_TOKENS "
                              "(viewer:<token>,operator:<token>); for a dashboard on this "
                              "machine only, pass --insecure-local")
        if insecure_local and tokens:
            raise ConfigError("--insecure-local is for running without tokens: unset "
                              "STREAMQ_DASHBOARD_TOKENS or drop --insecure-local")
        if insecure_local:
            if host not in (None, LOCAL_HOST, "localhost"):
                raise ConfigError(f"--insecure-local binds {LOCAL_HOST} only; drop --host {host}")
            host = LOCAL_HOST
        if port is None:
            port = DEFAULT_PORT
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port must be from 0 to 65535, got {port}")
        if rescan_s < 0:
            raise ConfigError("--rescan must be >= 0 seconds")
        if not session_hours > 0:
            raise ConfigError("--session-hours must be > 0")
        for origin in allowed_origins:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ConfigError(f"--allowed-origin {origin!r} must look like https://host[:port]")
        names = tuple(dict.fromkeys(check_queue_name(n) for n in queues))
        secret_text = env.get("STREAMQ_DASHBOARD_SECRET", "")
        if secret_text and len(secret_text) < MIN_TOKEN_CHARS:
            raise ConfigError(f"STREAMQ_DASHBOARD_SECRET must be at least {MIN_TOKEN_CHARS} "
                              "characters")
        secret = derive_secret(tokens, secret_text)
        return cls(tokens=tokens, secret=secret, host=host or "0.0.0.0", port=port, queues=names,
                   insecure_local=insecure_local, rescan_s=rescan_s, session_hours=session_hours,
                   allowed_origins=tuple(o.rstrip("/") for o in allowed_origins),
                   secure_cookies=secure_cookies)


def derive_secret(tokens: Sequence[Token], configured: str = "") -> bytes:
    """The key that signs sessions: the configured secret, else one derived from the
    tokens (changing a token logs everyone out). Without either (insecure-local), a
    random key per process."""
    if configured:
        material = configured.encode()
    elif tokens:
        material = "\n".join(sorted(f"{t.role}:{t.value}" for t in tokens)).encode()
    else:
        material = os.urandom(32)
    return hmac.new(b"streamq-dashboard-session-v1", material, hashlib.sha256).digest()


__all__ = ["ROLES", "DashboardConfig", "Token", "derive_secret", "parse_tokens"]
