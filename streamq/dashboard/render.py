"""HTML for the pages: escaping, the page frame, tables, times, masked values.

Plain server-rendered HTML (no template engine, no build step): every value goes through
``esc``; every text that may hold personal data goes through ``mask`` (phone numbers
as ``+2547****678``) and payloads through ``masked_payload`` (numbers masked, message
texts and codes hidden, as the logs and the CLI show them). Scripts and styles are
static files, so the Content-Security-Policy allows no inline code.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web

from ..crypto import sealed_label
from ..logs import DROPPED_KEYS
from ..redact import redact_text
from .auth import identity_of, maybe_identity
from .state import dashboard_of

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def mask(text: object) -> str:
    """Escaped text with phone-like digit runs masked."""
    return esc(redact_text("" if text is None else str(text)))


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): "***" if str(k).lower() in DROPPED_KEYS else _redact(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def masked_payload(data: Any, reason: str = "") -> str:
    """A payload as indented JSON: numbers masked, secret-bearing fields (message text,
    codes, keys) replaced by ***. An encrypted payload this process cannot open is shown
    as a marker with its key id and ``reason``."""
    if isinstance(data, bytes | bytearray):
        return sealed_label(bytes(data), reason) or f"<{len(data)} bytes that do not decode>"
    try:
        builtins = msgspec.to_builtins(data, str_keys=True)
    except (TypeError, msgspec.EncodeError):
        return f"<{type(data).__name__} that cannot be shown>"
    return msgspec.json.format(msgspec.json.encode(_redact(builtins)), indent=2).decode()


def fmt_time(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def ago(dt: datetime | None, now: float | None = None) -> str:
    if dt is None:
        return ""
    delta = (time.time() if now is None else now) - dt.timestamp()
    future = delta < 0
    s = abs(delta)
    if s < 60:
        text = f"{s:.0f}s"
    elif s < 3600:
        text = f"{s / 60:.0f}m"
    elif s < 86400:
        text = f"{s / 3600:.1f}h"
    else:
        text = f"{s / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


def when(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return (f'<time datetime="{esc(dt.isoformat())}" title="{esc(fmt_time(dt))}">'
            f"{esc(fmt_time(dt))}</time> <span class=ago>{esc(ago(dt))}</span>")


def link(href: str, text: str, cls: str = "") -> str:
    c = f' class="{esc(cls)}"' if cls else ""
    return f'<a href="{esc(href)}"{c}>{text}</a>'


def q_path(queue: str, *rest: str) -> str:
    return "/".join(["/q", quote(queue, safe=""), *(quote(r, safe="") for r in rest)])


def with_query(path: str, **params: object) -> str:
    clean = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(clean) if clean else "")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "",
          empty: str = "nothing here") -> str:
    """Cells are HTML already (escape before)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class=empty>{esc(empty)}</td></tr>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def action_form(request: web.Request, path: str, label: str, *, fields: Mapping[str, str] = {},
                confirm: str = "", cls: str = "") -> str:
    """A POST button with the CSRF token; shown disabled to a viewer (the server refuses
    their actions anyway)."""
    ident = identity_of(request)
    token = dashboard_of(request).authority.csrf_token(ident)
    hidden = "".join(f'<input type=hidden name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    data = f' data-confirm="{esc(confirm)}"' if confirm else ""
    disabled = "" if ident.can_act else ' disabled title="operators only"'
    return (f'<form method=post action="{esc(path)}" class="inline {esc(cls)}"{data}>'
            f'<input type=hidden name=csrf value="{esc(token)}">{hidden}'
            f"<button type=submit{disabled}>{esc(label)}</button></form>")


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    suffix: str
    """Appended to the queue's path: '' (jobs), '/dead', '/workers'."""


QUEUE_NAV: list[NavItem] = []
"""Per-queue tabs, filled by the page modules (pages/__init__.py)."""


def page(request: web.Request, title: str, body: str, *, queue: str | None = None,
         tab: str = "", live: Sequence[str] = (), status: int = 200,
         data: Mapping[str, str] = {}) -> web.Response:
    """The frame every page shares: header with search and who is logged in, the queue's
    tabs, a flash message from ``?msg=``, the body, and the live-update hooks."""
    ident = maybe_identity(request)
    dash = dashboard_of(request)
    csrf = dash.authority.csrf_token(ident) if ident is not None else ""
    nav = ""
    if queue is not None:
        tabs = "".join(
            link(q_path(queue) + item.suffix, esc(item.label), "tab active" if item.label == tab
                 else "tab") for item in QUEUE_NAV)
        nav = f'<nav class=tabs><span class=qname>{esc(queue)}</span>{tabs}</nav>'
    who = ""
    if ident is not None:
        logout = ""
        if ident.via == "cookie" and ident.actor != "local":
            logout = (f'<form method=post action="/logout" class=inline>'
                      f'<input type=hidden name=csrf value="{esc(csrf)}">'
                      f"<button type=submit class=link>log out</button></form>")
        who = f'<span class="who role-{esc(ident.role)}">{esc(ident.actor)}</span>{logout}'
    search = ""
    if ident is not None:
        # a POST: a phone number typed here must not end up in a URL
        search = ('<form class=search action="/search" method=post role=search>'
                  f'<input type=hidden name=csrf value="{esc(csrf)}">'
                  '<input name=q placeholder="job id or phone number" '
                  'aria-label="job id or phone number" autocomplete=off required>'
                  "<button type=submit>find</button></form>")
    links = ('<nav class=global><a href="/">queues</a><a href="/breakers">provider breakers</a>'
             "</nav>" if ident is not None else "")
    msg = request.query.get("msg", "")
    flash = f'<p class=flash role=status>{mask(msg[:300])}</p>' if msg else ""
    attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in data.items())
    live_attr = f' data-live="{esc(",".join(live))}"' if live else ""
    text = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta name=csrf-token content="{esc(csrf)}">
<title>{esc(title)} · streamq</title>
<link rel=stylesheet href="/static/style.css">
<script src="/static/app.js" defer></script>
</head><body{live_attr}{attrs}>
<header><a class=brand href="/">streamq</a>{links}{search}<span class=spacer></span>{who}</header>
{nav}<main>{flash}{body}</main>
<footer><span id=live-status data-state=off></span></footer>
</body></html>"""
    return web.Response(text=text, content_type="text/html", status=status, headers=HEADERS)


def redirect_back(request: web.Request, path: str, msg: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(with_query(path, msg=msg))


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


__all__ = ["HEADERS", "QUEUE_NAV", "NavItem", "action_form", "ago", "esc", "fmt_time", "link",
           "mask", "masked_payload", "page", "q_path", "table", "when", "with_query"]
