"""The web app staff open: FastAPI routes and Jinja templates, no images anywhere.

Pages: ``/`` the live board (tiles and open alerts, kept fresh by server-sent events from ``/stream``),
``/alerts``, ``/history`` (sets by rack and day), ``/sets/<rack>/<set>`` (the reps and a chart of knee cave per
leg), ``/export/sets.csv`` and ``/export/reps.csv``, ``/health`` (every rack's health and the invalid
messages), ``/racks/<rack>`` (one rack's health, trend and actions), ``/users`` (admins). Every page but the
sign-in needs a session; every POST needs the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``, which htmx sends).
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from . import auth
from .alerts import KIND_TITLES, loss_lines
from .board import Board, sse_frame, tile_view
from .store import Store

HERE = Path(__file__).parent
RACK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CSP = ("default-src 'self'; img-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class Context:
    """A signed-in request: who, with which role, and the CSRF token for the page's forms."""

    def __init__(self, name: str, role: str, csrf: str):
        self.name, self.role, self.csrf = name, role, csrf

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class SecurityHeaders:
    """The security headers on every response, as a plain ASGI middleware: Starlette's ``@app.middleware("http")``
    passes every chunk of every response through a task and a memory channel, which for 50 open board streams
    was a tenth of the dashboard's time under load."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"same-origin")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(store: Store, board: Board, ingester=None, *, secure_cookies: bool = True,
               background=()) -> FastAPI:
    """The app; ``background`` are coroutine functions run for the app's lifetime (ingester, board, retention)."""
    import asyncio

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["kind_title"] = lambda kind: KIND_TITLES.get(kind, kind)
    limiter = auth.LoginLimiter()

    def render_tile(view: dict[str, Any]) -> str:
        return templates.get_template("_tile.html").render(t=view)

    def render_alerts() -> str:
        return templates.get_template("_alerts.html").render(alerts=store.alerts(open_only=True, limit=50),
                                                             ctx=None)

    @asynccontextmanager
    async def lifespan(app):
        tasks = [asyncio.create_task(job()) for job in background]
        tasks.append(asyncio.create_task(board.run(render_tile, render_alerts)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="rackwatch dashboard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.store, app.state.board, app.state.ingester = store, board, ingester

    app.add_middleware(SecurityHeaders)

    # -- sign-in ------------------------------------------------------------------------------------------------

    def signed_in(request: Request) -> Context:
        token = request.cookies.get(auth.SESSION_COOKIE)
        found = store.signed_in(token) if token else None
        if found is None:
            raise HTTPException(303, headers={"Location": "/login"})
        user, csrf = found
        return Context(user.name, user.role, csrf)

    async def checked(request: Request, ctx: Context = Depends(signed_in)) -> Context:
        """A signed-in POST carrying the session's CSRF token."""
        token = request.headers.get("X-CSRF-Token")
        if token is None:
            token = (await request.form()).get("csrf_token")
        if not auth.same_token(token, ctx.csrf):
            raise HTTPException(403, "This form has expired or did not come from the dashboard: reload the page.")
        return ctx

    def page(request: Request, name: str, ctx: Context | None, **values) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"ctx": ctx, **values})

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, error: str | None = None):
        token = auth.new_token()
        response = page(request, "login.html", None, login_csrf=token, error=error)
        response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=secure_cookies, max_age=3600)
        return response

    @app.post("/login")
    def login(request: Request, name: str = Form(...), password: str = Form(...), csrf_token: str = Form("")):
        if not auth.same_token(csrf_token, request.cookies.get(auth.LOGIN_CSRF_COOKIE)):
            return login_form(request, "The sign-in form expired: try again.")
        address = f"ip:{request.client.host if request.client else '?'}"
        if limiter.blocked(address, f"user:{name}"):
            response = login_form(request, "Too many failed sign-ins: wait five minutes and try again.")
            response.status_code = 429
            return response
        user = store.user(name)
        if user is None:
            auth.dummy_verify(password)
        if user is None or not auth.verify_password(password, user.password_hash):
            limiter.failed(address, f"user:{name}")
            response = login_form(request, "Wrong name or password.")
            response.status_code = 401
            return response
        limiter.succeeded(f"user:{name}")
        token, csrf = auth.new_token(), auth.new_token()
        store.open_sign_in(user.id, token, csrf, auth.SESSION_HOURS)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies,
                            max_age=int(auth.SESSION_HOURS * 3600))
        response.delete_cookie(auth.LOGIN_CSRF_COOKIE)
        return response

    @app.post("/logout")
    def logout(request: Request, ctx: Context = Depends(checked)):
        store.close_sign_in(request.cookies.get(auth.SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    # -- the board ------------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def board_page(request: Request, ctx: Context = Depends(signed_in)):
        return page(request, "board.html", ctx, tiles=board.tiles(), alerts=store.alerts(open_only=True, limit=50))

    @app.get("/stream")
    async def stream(ctx: Context = Depends(signed_in)):
        """Server-sent events: the board's updates as the bytes the board encoded once for every browser (no
        per-browser encoding), and a comment every 15 s so that proxies keep a quiet stream open."""
        import asyncio

        async def updates():
            queue = board.subscribe()
            try:
                # A browser (re)connecting gets the whole board first.
                yield sse_frame("tiles", board.tiles_message(board.snapshots, render_tile) or '{"tiles": []}')
                while True:
                    try:   # (asyncio.timeout, not wait_for: no task made per update and stream)
                        async with asyncio.timeout(15):
                            item = await queue.get()
                    except TimeoutError:
                        yield b": ping\n\n"
                        continue
                    frames = []
                    while item is not None:   # updates queued meanwhile go out in one write
                        frames.append(item[1])
                        if queue.empty():
                            break
                        item = queue.get_nowait()
                    if frames:
                        yield b"".join(frames)
                    if item is None:
                        return
            finally:
                board.unsubscribe(queue)

        return StreamingResponse(updates(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- alerts -------------------------------------------------------------------------------------------------

    @app.get("/alerts", response_class=HTMLResponse)
    def alerts_page(request: Request, ctx: Context = Depends(signed_in)):
        return page(request, "alerts.html", ctx, alerts=store.alerts(limit=500))

    @app.post("/alerts/{alert_id}/ack")
    def acknowledge(request: Request, alert_id: int, ctx: Context = Depends(checked)):
        store.acknowledge(alert_id, ctx.name)
        board.alerts_changed()
        if request.headers.get("HX-Request"):
            return HTMLResponse(templates.get_template("_alerts.html").render(
                alerts=store.alerts(open_only=True, limit=50), ctx=ctx))
        return RedirectResponse(request.headers.get("Referer") or "/alerts", status_code=303)

    # -- history ------------------------------------------------------------------------------------------------

    def _filters(rack: str | None, day: str | None) -> tuple[str | None, date | None]:
        if rack and not RACK_ID.match(rack):
            raise HTTPException(400, "A rack id is 1-64 letters, digits, - or _.")
        try:
            return rack or None, date.fromisoformat(day) if day else None
        except ValueError:
            raise HTTPException(400, f"The day {day!r} is not a date like 2026-12-03.") from None

    @app.get("/history", response_class=HTMLResponse)
    def history(request: Request, rack: str | None = None, day: str | None = None, verdict: str | None = None,
                ctx: Context = Depends(signed_in)):
        rack_id, day_value = _filters(rack, day)
        sets = store.sets(rack=rack_id, day=day_value, verdict=verdict if verdict in ("cave", "clean") else None)
        return page(request, "history.html", ctx, sets=sets, racks=store.rack_names(),
                    rack=rack_id or "", day=day or "", verdict=verdict or "")

    @app.get("/sets/{rack}/{set_id}", response_class=HTMLResponse)
    def set_page(request: Request, rack: str, set_id: str, ctx: Context = Depends(signed_in)):
        _filters(rack, None)
        reps, summary = store.set_detail(rack, set_id)
        if not reps and summary is None:
            raise HTTPException(404, f"No set {set_id} on {rack}.")
        from rackwatch.judge import JudgeSettings
        limits = JudgeSettings()   # the default thresholds; a rack configured otherwise judged by its own
        chart = {"rep": [r.rep for r in reps], "left": [r.cave_left for r in reps],
                 "right": [r.cave_right for r in reps], "load": [r.load_value for r in reps],
                 "minor": limits.minor_cave, "moderate": limits.moderate_cave, "severe": limits.severe_cave}
        words = store.set_words(summary) if summary is not None else {}
        return page(request, "set.html", ctx, rack=rack, set_id=set_id, reps=reps, summary=summary, words=words,
                    chart_json=json.dumps(chart))

    @app.get("/export/{what}.csv")
    def export(what: str, rack: str | None = None, day: str | None = None, ctx: Context = Depends(signed_in)):
        rack_id, day_value = _filters(rack, day)
        out = io.StringIO()
        writer = csv.writer(out)
        if what == "reps":
            columns = ["rack", "set_id", "rep", "time", "exercise", "verdict", "severity", "load_value", "units",
                       "one_rm", "percent_1rm", "cave_left", "cave_right", "severity_left", "severity_right",
                       "depth", "unjudged_reason", "id"]
            writer.writerow(columns)
            for row in store.reps(rack=rack_id, day=day_value):
                writer.writerow([_csv(getattr(row, c)) for c in columns])
        elif what == "sets":
            columns = ["rack", "set_id", "start", "end", "reps", "clean", "caves", "unjudged", "load", "units",
                       "percent_1rm"]
            writer.writerow(columns)
            for row in store.sets(rack=rack_id, day=day_value, limit=100_000):
                writer.writerow([_csv(row[c]) for c in columns])
        else:
            raise HTTPException(404, "Export sets.csv or reps.csv.")
        name = f"rackwatch-{what}{'-' + rack_id if rack_id else ''}{'-' + day if day else ''}.csv"
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # -- health and racks ---------------------------------------------------------------------------------------

    @app.get("/health", response_class=HTMLResponse)
    def health_page(request: Request, ctx: Context = Depends(signed_in)):
        invalid_count, invalid = store.invalid_messages()
        racks = [(r, tile_view(r, board.rules), loss_lines(r["health"])) for r in store.racks()]
        return page(request, "health.html", ctx, racks=racks, invalid_count=invalid_count, invalid=invalid,
                    ingester=ingester)

    def _rack_or_404(rack: str) -> dict[str, Any]:
        _filters(rack, None)
        found = store.rack(rack)
        if found is None:
            raise HTTPException(404, f"No rack {rack} has published to this dashboard.")
        return found

    @app.get("/racks/{rack}", response_class=HTMLResponse)
    def rack_page(request: Request, rack: str, ctx: Context = Depends(signed_in)):
        snapshot = _rack_or_404(rack)
        return page(request, "rack.html", ctx, rack=rack, snap=snapshot, tile=tile_view(snapshot, board.rules),
                    history=store.health_history(rack), trend=store.trend(rack), commands=store.commands(rack),
                    not_counted=store.not_counted(rack))

    @app.get("/racks/{rack}/commands", response_class=HTMLResponse)
    def rack_commands(request: Request, rack: str, ctx: Context = Depends(signed_in)):
        _filters(rack, None)
        return page(request, "_commands.html", ctx, rack=rack, commands=store.commands(rack))

    async def _send(request: Request, rack: str, name: str, payload: dict[str, Any], ctx: Context):
        from jsonschema import ValidationError

        from rackwatch import contract

        _rack_or_404(rack)
        error = None
        try:
            contract.validator("command").validate(payload)
            if ingester is None:
                raise RuntimeError("this dashboard has no broker connection")
            await ingester.publish(f"{ingester.topic_root}/{rack}/cmd/{name}", payload)
            store.record_command(payload["id"], rack, name, payload, ctx.name)
        except ValidationError as exc:
            error = f"Not sent: {exc.message}."
        except Exception as exc:
            error = f"Not sent: {exc}. Check the broker and try again."
        return page(request, "_commands.html", ctx, rack=rack, commands=store.commands(rack), error=error)

    @app.post("/racks/{rack}/identify", response_class=HTMLResponse)
    async def identify(request: Request, rack: str, ctx: Context = Depends(checked)):
        return await _send(request, rack, "identify", {"id": _command_id(), "seconds": 10}, ctx)

    @app.post("/racks/{rack}/load", response_class=HTMLResponse)
    async def set_load(request: Request, rack: str, value: str = Form(""), units: str = Form("kg"),
                       ctx: Context = Depends(checked)):
        try:
            number = float(value) if value.strip() else None
        except ValueError:
            return page(request, "_commands.html", ctx, rack=rack, commands=store.commands(rack),
                        error=f"Not sent: {value!r} is not a number (leave it empty to clear the load).")
        return await _send(request, rack, "load", {"id": _command_id(), "value": number, "units": units}, ctx)

    @app.get("/users", response_class=HTMLResponse)
    def users_page(request: Request, ctx: Context = Depends(signed_in)):
        if not ctx.admin:
            raise HTTPException(403, "Only an admin can see the users.")
        return page(request, "users.html", ctx, users=store.users())

    return app


def _command_id() -> str:
    return "dash-" + uuid.uuid4().hex[:16]


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat(timespec="milliseconds") + "Z"
    return value
