"""Log in with a token (sets the signed session cookie), log out, and the health check."""

from __future__ import annotations

from aiohttp import web

from ..auth import COOKIE
from ..render import HEADERS, esc, page
from ..state import dashboard_of

routes = web.RouteTableDef()


def _safe_next(value: str) -> str:
    """Only a path of this site (no //host, no scheme) may follow a login."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def login_form(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    nxt = request.query.get("next") or (request.path_qs if request.path != "/login" else "/")
    msg = f"<p class=error role=alert>{esc(error)}</p>" if error else ""
    body = f"""<section class=login><h1>Log in</h1>{msg}
<form method=post action="/login">
<input type=hidden name=next value="{esc(_safe_next(nxt))}">
<label>Token <input type=password name=token autocomplete=current-password required autofocus></label>
<button type=submit>Log in</button></form>
<p class=hint>Use a viewer or operator token from <code>STREAMQ_DASHBOARD_TOKENS</code>.</p>
</section>"""
    return page(request, "log in", body, status=status)


@routes.get("/login")
async def login_get(request: web.Request) -> web.StreamResponse:
    if dashboard_of(request).config.insecure_local:
        raise web.HTTPSeeOther("/")
    return login_form(request)


@routes.post("/login")
async def login_post(request: web.Request) -> web.StreamResponse:
    dash = dashboard_of(request)
    authority = dash.authority
    if dash.config.insecure_local:
        raise web.HTTPSeeOther("/")
    if not authority.origin_ok(request):  # login CSRF: a foreign page must not log you in
        raise web.HTTPForbidden(text="forbidden: the login does not come from this dashboard\n")
    form = await request.post()
    presented = form.get("token", "")
    token = authority.match_token(presented) if isinstance(presented, str) else None
    if token is None:
        return login_form(request, "That token is not valid.", status=401)
    response = web.HTTPSeeOther(_safe_next(str(form.get("next", "/"))), headers=HEADERS)
    authority.set_cookie(response, request, authority.issue(token))
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


__all__ = ["login_form", "routes"]
