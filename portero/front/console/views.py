"""The console's pages: a Quart blueprint at ``/console``, server-rendered from ``templates/console``.

Every page but the login needs a session (:mod:`.auth`); without one it redirects to the login. Every form
carries a single-use token of the session and a POST without a good one does nothing (403 "Refused").
Pages work without JavaScript; ``static/console.js`` only refreshes the element ``#live`` every two seconds
(``X-Console-Partial: 1`` asks for that element alone, and ``X-Console-Form`` hands back the page's unused
form token, so a refresh does not issue a new one each time).

Decisions made here go through the same broker as Telegram's buttons, with ``source = "console"``: the first
decision wins, the audit row says ``console``, and the bot edits its message to "Approved in the console".

Every answer carries ``Cache-Control: no-store``, a Content-Security-Policy that allows only the console's
own script and style, and no framing. ``Referrer-Policy`` is ``same-origin``, not ``no-referrer``: under
``no-referrer`` Chromium posts forms with ``Origin: null``, which the gateway's Origin check (in front of
every path) refuses. Login attempts are recorded as ``console-login`` events.
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from quart import Blueprint, Response, g, redirect, render_template, request

from ...config import ConsoleSection, ServerSection
from ...core import pins as core_pins
from ...core.policy import ACTIONS, QUICK_GRANT_SECONDS, validate_pattern
from ...durations import format_duration, parse_duration
from ...store import AUDIT_DECISIONS, AUDIT_OUTCOMES, StoreError
from .approver import ConsoleApprover, decided_by
from .auth import LoginForms, LoginLimiter, Session, Sessions, verify_password

if TYPE_CHECKING:
    from ...approvals import ApprovalBroker
    from ...gateway.router import Router
    from ...gateway.sessions import Sessions as McpSessions
    from ...store import Store
    from ..security import Guard

log = logging.getLogger("portero.console")

COOKIE = "portero_console"
PREFIX = "/console"
PAGE_ROWS = 50
RECENT_CALLS = 15
MAX_FORM_BYTES = 64 * 1024
MAX_ROW_ID = 2**63 - 1
SHOWN_CHARS = 20_000  # of an approval's or a call's arguments, on a page
LOGIN_EVENTS = 10  # the last console logins the overview lists

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

Clock = Callable[[], float]


@attrs.define(eq=False)
class Console:
    """What the pages read and act on. Built by the composition root when ``[console] enabled``."""

    section: ConsoleSection
    server: ServerSection
    router: Router
    mcp_sessions: McpSessions
    store: Store
    broker: ApprovalBroker
    approver: ConsoleApprover
    guard: Guard
    clock: Clock = time.time
    sessions: Sessions = attrs.field(init=False)
    login_forms: LoginForms = attrs.field(factory=LoginForms, init=False)
    limiter: LoginLimiter = attrs.field(factory=LoginLimiter, init=False)
    # scrypt takes 16 MiB and ~50 ms: two at a time, however many logins arrive at once.
    hashing: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(2), init=False)
    max_grant: float = 86400.0  # the longest grant the form accepts ([telegram] max_grant when set)

    def __attrs_post_init__(self) -> None:
        self.sessions = Sessions(idle=self.section.session_idle, max_age=self.section.session_max)

    def blueprint(self) -> Blueprint:
        return _blueprint(self)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``value`` as indented JSON, cut after ``limit`` characters (a page that refreshes every two
    seconds must not carry megabytes of arguments)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit:,} more characters)"
    return text


def parse_moment(text: str, now: float) -> float:
    """An audit filter's time: a duration ago (``"1h"``) or a date/time in UTC (``2026-11-30``,
    ``2026-11-30T12:00``, ``2026-11-30 12:00:05``). Raises ValueError with a readable message."""
    text = text.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected a duration like 1h or a date like 2026-11-30 12:00, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _see(path: str) -> Response:
    """A 303 to the console's ``path``."""
    return cast(Response, redirect(f"{PREFIX}{path}", 303))


def _peer() -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "?"


def _blueprint(console: Console) -> Blueprint:
    bp = Blueprint(
        "console",
        __name__,
        url_prefix=PREFIX,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    secure = console.server.tls

    @bp.app_template_filter("when")
    def when_filter(ts: float | None) -> str:
        return _when(ts)

    @bp.app_template_filter("pretty")
    def pretty_filter(value: Any) -> str:
        return _pretty(value)

    @bp.app_template_filter("duration")
    def duration_filter(seconds: float) -> str:
        return format_duration(max(seconds, 0.0))

    @bp.app_template_filter("decided_by")
    def decided_by_filter(source: str) -> str:
        return decided_by(source)

    async def current_session() -> Session | None:
        password = console.approver.password
        return console.sessions.get(request.cookies.get(COOKIE), console.clock(), password)

    @bp.before_request
    async def check() -> Response | None:
        g.console_session = None
        if request.endpoint in ("console.static", "console.login", "console.login_post"):
            return None
        session = await current_session()
        if session is None:
            if request.headers.get("X-Console-Partial"):
                return Response("logged out", status=401, mimetype="text/plain")
            return _see("/login")
        g.console_session = session
        if request.method == "POST":
            form = await request.form
            if not session.use_form_token(form.get("csrf")):
                log.warning(
                    "console: refused a %s %s without a good form token", request.method, request.path
                )
                return await _page("refused.html", status=403, title="Refused")
        return None

    @bp.errorhandler(StoreError)
    @bp.errorhandler(sqlite3.Error)
    async def store_failed(exc: Exception) -> Response:
        """The database could not answer (locked past its budget, a disk error): a page that says so,
        503, and the gateway goes on."""
        log.warning("console: the database could not answer %s %s: %s", request.method, request.path, exc)
        return await _page("unavailable.html", status=503, title="Database unavailable")

    @bp.after_request
    async def headers(response: Response) -> Response:
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _page(template: str, *, status: int = 200, **context: Any) -> Response:
        """Render ``template``: the whole page, or only its ``#live`` part for the live refresh."""
        session: Session | None = g.get("console_session")
        partial = bool(request.headers.get("X-Console-Partial"))
        form_token = ""
        if session is not None:
            reuse = request.headers.get("X-Console-Form", "")
            form_token = reuse if partial and session.has_form_token(reuse) else session.issue_form_token()
        html = await render_template(
            f"console/{template}",
            layout="console/partial.html" if partial else "console/base.html",
            csrf=form_token,
            logged_in=session is not None,
            pending_count=len(console.broker.pending()),
            flash=(session.take_flash() if session is not None and not partial else ""),
            **context,
        )
        response = Response(html, status=status, mimetype="text/html")
        if form_token:
            response.headers["X-Console-Form"] = form_token
        if session is not None:  # for the script: the tab's title and the menu's badge
            response.headers["X-Console-Pending"] = str(len(console.broker.pending()))
        return response

    def _back(path: str, flash: str) -> Response:
        """303 to the page at ``path``, which shows ``flash`` once (post/redirect/get: a reload posts
        nothing). The message stays in the session, not the URL, so no link can put words on a page."""
        session: Session | None = g.get("console_session")
        if session is not None:
            session.flash = flash
        return _see(path)

    # --- login ------------------------------------------------------------------------------------

    @bp.get("/login")
    async def login() -> Response:
        if await current_session() is not None:
            return _see("/")
        return await _login_page()

    async def _login_page(message: str = "", status: int = 200) -> Response:
        token = console.login_forms.issue(console.clock())
        html = await render_template(
            "console/login.html",
            layout="console/base.html",
            csrf=token,
            logged_in=False,
            pending_count=0,
            message=message,
            has_password=console.approver.password is not None,
            flash="",
        )
        return Response(html, status=status, mimetype="text/html")

    async def _record_login(result: str, peer: str) -> None:
        try:
            await console.store.record_event("console-login", {"result": result, "peer": peer})
        except Exception:
            log.warning("could not record a console login attempt", exc_info=True)

    @bp.post("/login")
    async def login_post() -> Response:
        now = console.clock()
        peer = _peer()
        form = await request.form
        if not console.login_forms.use(form.get("csrf"), now):
            await _record_login("bad-csrf", peer)
            return await _page("refused.html", status=403, title="Refused")
        if not console.limiter.allowed(peer, now):
            await _record_login("rate-limited", peer)
            log.warning("console: login from %s refused: too many wrong passwords", peer)
            return await _login_page("Too many wrong passwords: try again in a few minutes.", 429)
        stored = await console.approver.refresh(console.store)
        password = str(form.get("password", ""))
        ok = False
        if stored is not None and password:
            # The bearer token (or any client's) never logs in, whatever the stored hash says.
            is_token = console.guard.is_token(password)
            matches = await trio.to_thread.run_sync(
                verify_password, password, stored, limiter=console.hashing
            )
            ok = matches and not is_token
        if not ok:
            console.limiter.failed(peer, now)
            await _record_login("wrong-password", peer)
            log.warning("console: wrong password from %s", peer)
            await trio.sleep(0.2)  # a little friction for guessing
            text = "Wrong password." if stored is not None else "No console password is set yet."
            return await _login_page(text, 401)
        assert stored is not None
        console.limiter.succeeded(peer)
        session = console.sessions.new(now, stored, peer)
        await _record_login("ok", peer)
        log.info("console: logged in from %s", peer)
        response = _see("/")
        response.set_cookie(
            COOKIE, session.token, httponly=True, samesite="Strict", secure=secure, path=PREFIX
        )
        return response

    @bp.post("/logout")
    async def logout() -> Response:
        console.sessions.end(request.cookies.get(COOKIE))
        response = _see("/login")
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="Strict", secure=secure)
        return response

    # --- overview ---------------------------------------------------------------------------------

    @bp.get("/")
    async def overview() -> Response:
        recent, _ = await console.store.audit_page(limit=RECENT_CALLS)
        logins = await console.store.recent_events(LOGIN_EVENTS, kind="console-login")
        sessions = sorted(console.mcp_sessions.all(), key=lambda s: s.last_seen, reverse=True)
        now = console.clock()
        return await _page(
            "overview.html",
            title="Overview",
            servers=console.router.upstream_status(),
            tools=len(console.router.catalog.tools),
            sessions=sessions[:50],
            session_count=len(sessions),
            pending=console.broker.pending(),
            recent=recent,
            logins=logins,
            uptime=console.router.uptime(),
            now=now,
            monotonic=console.mcp_sessions.clock(),
        )

    # --- approvals --------------------------------------------------------------------------------

    @bp.get("/approvals")
    async def approvals() -> Response:
        return await _page(
            "approvals.html",
            title="Approvals",
            pending=console.broker.pending(),
            recent=list(console.approver.recent)[:20],
            now=console.clock(),
        )

    @bp.post("/approvals/<approval_id>")
    async def decide(approval_id: str) -> Response:
        form = await request.form
        action = form.get("action", "")
        reason = str(form.get("reason", "")).strip()
        approval = console.broker.get(approval_id)
        tool = approval.tool if approval is not None else approval_id
        if action == "approve":
            result = console.broker.decide(approval_id, True, source="console")
            done = f"Approved {tool}"
        elif action == "approve30":
            result = console.broker.decide(
                approval_id, True, grant_seconds=QUICK_GRANT_SECONDS, source="console"
            )
            done = f"Approved {tool}, and granted it for {format_duration(QUICK_GRANT_SECONDS)}"
        elif action in ("always-allow", "always-deny"):
            # As Telegram's buttons: the exact rule for this one tool is stored first, then the call is
            # decided with it (a tool whose name holds "*" gets no rule: it would be a pattern).
            if approval is None:
                result = "already" if console.approver.find(approval_id) else "unknown"
                done = ""
            elif "*" in approval.tool:
                return _back("/approvals", f"No rule for {tool}: its name holds '*'")
            else:
                rule = "allow" if action == "always-allow" else "deny"
                try:
                    await console.router.add_chat_rule(approval.tool, rule, "console")
                except Exception as exc:
                    log.warning("console: saving a rule failed: %s", type(exc).__name__)
                    return _back("/approvals", "The rule could not be saved; nothing was decided")
                result = console.broker.decide(approval_id, rule == "allow", source="console")
                done = f"{tool}: {'allowed' if rule == 'allow' else 'denied'} from now on (a rule on Grants)"
        elif action == "deny":
            if reason:
                result = console.broker.deny_with_reason(approval_id, reason, source="console")
                done = f"Denied {tool}: the model reads your reason"
            else:
                result = console.broker.decide(approval_id, False, source="console")
                done = f"Denied {tool}"
        else:
            return _back("/approvals", f"Unknown action {action!r}")
        if result == "ok":
            log.info("console: %s (approval %s)", done.lower(), approval_id)
            return _back("/approvals", done)
        decided = console.approver.find(approval_id)
        if decided is not None:
            return _back(
                "/approvals",
                f"Already decided: {decided.tool} was {decided.state} {decided_by(decided.source)}",
            )
        return _back("/approvals", "Already decided, or no longer waiting")

    # --- audit ------------------------------------------------------------------------------------

    @bp.get("/audit")
    async def audit() -> Response:
        args = request.args
        filters = {
            k: args.get(k, "").strip() for k in ("tool", "client", "decision", "outcome", "since", "until")
        }
        problems: list[str] = []
        now = console.clock()
        since = until = None
        for key in ("since", "until"):
            if filters[key]:
                try:
                    value = parse_moment(filters[key], now)
                except ValueError as exc:
                    problems.append(f"{key}: {exc}")
                    continue
                if key == "since":
                    since = value
                else:
                    until = value
        if filters["tool"]:
            error = validate_pattern(filters["tool"])
            if error is not None:
                problems.append(f"tool: {error}")
        for key, allowed in (("decision", AUDIT_DECISIONS), ("outcome", AUDIT_OUTCOMES)):
            if filters[key] and filters[key] not in allowed:
                problems.append(f"{key}: expected one of {', '.join(allowed)}")
        before: int | None = None
        if args.get("before"):
            try:
                before = int(args["before"])
            except ValueError:
                problems.append("before: expected a record number")
            else:
                before = min(max(before, 0), MAX_ROW_ID)  # SQLite's integers are 64-bit
        rows: list[dict[str, Any]] = []
        older: int | None = None
        if not problems:
            rows, older = await console.store.audit_page(
                tool=filters["tool"] or None,
                client=filters["client"] or None,
                decision=filters["decision"] or None,
                outcome=filters["outcome"] or None,
                since=since,
                until=until,
                before=before,
                limit=PAGE_ROWS,
            )
        query = {k: v for k, v in filters.items() if v}
        return await _page(
            "audit.html",
            title="Audit",
            filters=filters,
            query=query,
            rows=rows,
            older=older,
            paged=before is not None,
            problems=problems,
            decisions=AUDIT_DECISIONS,
            outcomes=AUDIT_OUTCOMES,
            clients=sorted(console.router.clients),
        )

    @bp.get("/audit/<int:record_id>")
    async def audit_record(record_id: int) -> Response:
        record = await console.store.audit_entry(record_id) if record_id <= MAX_ROW_ID else None
        if record is None:
            return await _page(
                "missing.html", status=404, title="Not found", what=f"audit record {record_id}"
            )
        return await _page("audit_record.html", title=f"Call {record_id}", record=record)

    # --- grants -----------------------------------------------------------------------------------

    @bp.get("/grants")
    async def grants() -> Response:
        return await _page(
            "grants.html",
            title="Grants",
            grants=console.broker.grants.active(),
            rules=sorted(console.router.chat_rules.items()),
            actions=ACTIONS,
            config_rules=len(console.router.config.policies.rules),
            now=console.clock(),
            clients=sorted(console.router.clients),
        )

    @bp.post("/grants")
    async def grant_add() -> Response:
        form = await request.form
        pattern = str(form.get("pattern", "")).strip()
        client = str(form.get("client", "")).strip() or None
        try:
            seconds = parse_duration(str(form.get("duration", "")).strip())
        except ValueError as exc:
            return _back("/grants", f"Not granted: duration: {exc}")
        if seconds > console.max_grant:
            return _back("/grants", f"Not granted: at most {format_duration(console.max_grant)}")
        if client is not None and client not in console.router.clients:
            return _back("/grants", f"Not granted: no client named {client!r}")
        try:
            grant = await console.broker.grants.add(pattern, seconds, "console", client)
        except ValueError as exc:
            return _back("/grants", f"Not granted: {exc}")
        log.info("console: granted %s for %s", grant.pattern, format_duration(seconds))
        whom = f" to {client}" if client else ""
        return _back("/grants", f"Granted {grant.pattern}{whom} for {format_duration(seconds)}")

    @bp.post("/rules")
    async def rule_add() -> Response:
        form = await request.form
        pattern = str(form.get("pattern", "")).strip()
        action = str(form.get("action", ""))
        try:
            before = await console.router.add_chat_rule(pattern, action, "console")
        except ValueError as exc:
            return _back("/grants", f"No rule added: {exc}")
        log.info("console: rule %s = %s", pattern, action)
        return _back("/grants", f"Rule {pattern} = {action}" + (f" (was {before})" if before else ""))

    @bp.post("/rules/remove")
    async def rule_remove() -> Response:
        form = await request.form
        pattern = str(form.get("pattern", ""))
        removed = await console.router.remove_chat_rule(pattern)
        if removed is None:
            return _back("/grants", f"There was no rule {pattern}")
        log.info("console: removed the rule %s (%s)", pattern, removed)
        return _back("/grants", f"Removed the rule {pattern} ({removed})")

    @bp.post("/grants/<int:grant_id>/revoke")
    async def grant_revoke(grant_id: int) -> Response:
        grant = next((x for x in console.broker.grants.active() if x.id == grant_id), None)
        if grant is None:
            return _back("/grants", "That grant has expired or was revoked already")
        count = await console.broker.grants.revoke(grant.pattern, grant.client)
        log.info("console: revoked %s (%d grant(s))", grant.pattern, count)
        return _back("/grants", f"Revoked {grant.pattern}")

    # --- pins and clients -------------------------------------------------------------------------

    @bp.get("/pins")
    async def pins_page() -> Response:
        held = console.router.pins.held()
        items = [(p, core_pins.question(p)) for p in held]
        return await _page("pins.html", title="Pins", items=items, mode=console.router.pins.mode)

    @bp.post("/pins")
    async def pins_decide() -> Response:
        form = await request.form
        key, action = str(form.get("key", "")), form.get("action", "")
        if action not in ("approve", "block"):
            return _back("/pins", f"Unknown action {action!r}")
        result, pin = await console.router.pins.decide(key, action == "approve", by="console")
        if result == "unknown" or pin is None:
            return _back("/pins", "That definition changed since the page was shown: look again")
        verb = "approved" if action == "approve" else "blocked"
        if result == "already":
            return _back("/pins", f"{pin.canonical} was {pin.state} already")
        log.info("console: %s the definition of %s", verb, pin.canonical)
        return _back("/pins", f"{pin.canonical} {verb}")

    @bp.get("/clients")
    async def clients_page() -> Response:
        router = console.router
        shown = [
            e for e in router.catalog.tools.values() if router.pins.refusal(e.server, e.original) is None
        ]
        shown.sort(key=lambda e: e.canonical)
        views = []
        for name, view in sorted(router.clients.items()):
            engine = view.policy if view.policy is not None else router.policy
            tools = []
            for entry in shown:
                if not view.sees(entry.canonical):
                    continue
                decision = (
                    router.broker.grants.apply(engine.decide(entry.canonical), entry.canonical, name)
                    if router.broker is not None
                    else engine.decide(entry.canonical)
                )
                tools.append((entry.canonical, decision.action, decision.source))
            sessions = sum(1 for s in console.mcp_sessions.all() if s.client == name)
            views.append({"name": name, "globs": view.tools, "tools": tools, "sessions": sessions})
        return await _page("clients.html", title="Clients", views=views)

    return bp


async def serve_console(
    console: Console, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The console's background work: follow the password setting (for ``available``)."""
    await console.approver.watch_password(console.store, task_status=task_status)
