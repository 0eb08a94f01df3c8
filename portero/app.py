"""Composition root: the nursery tree, signals, reload, and the shutdown order.

    run_gateway
    └── trio.run(serve)
        └── store (SQLite, closed last)
            └── upstreams (supervised; stopped after everything above them)
                ├── signal watcher (SIGTERM/SIGINT → shutdown; SIGHUP → reload)
                └── sessions (the calls nursery and the idle-session janitor)
                    └── front: Telegram bot (if configured), hypercorn (drains first)

Shutdown order is the nesting order, inside out: HTTP drains, pending approvals are denied,
Telegram stops, the calls still running are cancelled (each leaves its audit record), the upstreams
stop (stdin closed, SIGTERM, SIGKILL, each bounded), the store closes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve

from .approvals import ApprovalBroker, Approvers
from .config import Config, ConfigError, load_config
from .config.preflight import preflight
from .core.anonymize import Anonymizer
from .core.policy import PolicyEngine
from .front import hypercorn_fixes
from .front.asgi import build_app
from .front.console import Console, ConsoleApprover
from .front.console.views import serve_console
from .front.security import Guard
from .gateway.clients import client_views
from .gateway.router import Router
from .gateway.sessions import Sessions
from .logs import Redactor, setup_logging
from .store import Store, StoreError
from .systemd import Notifier, status_line
from .tracing import setup as setup_tracing

log = logging.getLogger("portero")

GRACEFUL_TIMEOUT = 5.0
KEEP_ALIVE_TIMEOUT = 75.0
HTTP_RESTART_DELAY = 0.5


def run_gateway(config: Config, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    # What `check` also reports: a program not on a child's PATH, a missing cwd or TLS file. One line
    # each naming the file and key, exit 2 -- not a traceback, nor a child restarted forever.
    problems = preflight(config, env)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr, flush=True)
        return 2
    redactor = setup_logging(config, env)
    # Once each, through logging (so also in log_file and as JSON): `serve` no longer prints them.
    for warning in config.warnings:
        log.warning("%s", warning)
    failed = False
    try:
        trio.run(serve, config, env, redactor)
    except* KeyboardInterrupt:
        pass
    except* StoreError as group:
        for exc in _leaves(group):
            log.error("%s", exc)
        failed = True
    except* OSError as group:  # e.g. the port is taken, or the TLS files can't be read
        for exc in _leaves(group):
            log.error("cannot serve on %s:%s: %s", config.server.host, config.server.port, exc)
        failed = True
    return 1 if failed else 0


async def serve(
    config: Config,
    env: Mapping[str, str],
    redactor: Redactor | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The router anonymizes what it shows; the redactor removes the secrets before that.
    clean: Callable[[str], str] = redactor.secrets_only if redactor is not None else (lambda text: text)
    store = await Store.open(os.path.join(config.server.data_dir, "gateway.db"))
    tracing = setup_tracing(config.server.otlp_endpoint, env)  # None: traces off, nothing is created
    try:
        approval_timeout = _approval_timeout(config)
        # Who can decide approvals: the console and the Telegram bot (added when it starts), each told of
        # every approval, the first decision winning. Neither: approvals are refused ("no approver").
        approvers = Approvers()
        has_approver = config.console.enabled or config.telegram is not None
        broker = await ApprovalBroker.open(
            store, timeout=approval_timeout, approver=approvers if has_approver else None
        )
        console_approver: ConsoleApprover | None = None
        if config.console.enabled:
            console_approver = ConsoleApprover()
            approvers.add(console_approver)
        sessions = Sessions(idle_timeout=config.server.session_idle_timeout)
        router = Router(
            config, env, sessions=sessions, store=store, broker=broker, clean_log=clean, tracing=tracing
        )
        router.set_chat_rules(await store.chat_rules())  # the admin's rules from the chat, kept in the store
        if redactor is not None:
            redactor.also = lambda text: router.anonymizer.to_fake_text(text)  # follows reloads
        shutdown = trio.Event()
        hurry = trio.Event()  # a second stop signal
        notifier = Notifier(env)  # systemd's Type=notify; a no-op without NOTIFY_SOCKET

        def status() -> str:
            return status_line(router.upstream_status(), len(broker.pending()), len(sessions))

        async with trio.open_nursery() as upstreams:
            live: dict[str, Any] = {}  # what a reload may reach that starts later: the Telegram bot
            # Who may connect, by token: kept here so a reload installs the clients' new tokens.
            live["guard"] = guard = Guard(config.server, config.clients)
            upstreams.start_soon(
                _watch_signals, shutdown, hurry, router, config.path, env, notifier, status, live
            )
            upstreams.start_soon(notifier.run, status)
            await upstreams.start(router.run_upstreams)
            async with trio.open_nursery() as calls:
                await calls.start(sessions.run)
                async with trio.open_nursery() as front:
                    if config.telegram is not None:
                        live["bot"] = await _start_bot(front, config, broker, router, store, approvers)
                    console = None
                    if console_approver is not None:
                        console = Console(
                            config.console,
                            config.server,
                            router,
                            sessions,
                            store,
                            broker,
                            console_approver,
                            guard,
                        )
                        if config.telegram is not None:
                            console.max_grant = config.telegram.max_grant
                        await front.start(serve_console, console)
                    binds, served = await _start_http(
                        front, config, router, sessions, shutdown, guard, console
                    )
                    for b in binds:
                        # Tests and scripts read this line to learn the bound port.
                        print(f"portero: listening on {b}", file=sys.stderr, flush=True)
                    log.info("portero listening on %s", ", ".join(binds))
                    task_status.started(binds)
                    # READY=1 once the port is bound and the servers still starting have come up (or 15 s).
                    await _until(lambda: _settle_reporting(router), shutdown)
                    if not shutdown.is_set():
                        log.info("%s", servers_summary(router))
                        shown, held = router.tool_counts()
                        log.info(
                            "ready: %d tools%s on %s — `portero client-config` prints how to connect",
                            shown,
                            f" ({held} more held for the admin: `portero pins`)" if held else "",
                            _mcp_url(config, binds),
                        )
                        notifier.ready(status())
                    await shutdown.wait()
                    notifier.stopping()
                    log.info("shutting down")
                    # Deny what still waits for the admin, so those requests can answer; hypercorn drains.
                    sessions.closing.set()
                    await _until(broker.shutdown, hurry)
                    log.debug("approvals closed; draining HTTP")
                    await _until(served.wait, hurry, GRACEFUL_TIMEOUT + 1)
                    log.debug("HTTP stopped")
                    front.cancel_scope.cancel()
                calls.cancel_scope.cancel()
            log.debug("stopping servers")
            upstreams.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
            if tracing is not None:  # send the last spans; a collector that is down may not hold us up
                with trio.move_on_after(TRACES_FLUSH_TIMEOUT):
                    await trio.to_thread.run_sync(tracing.shutdown, abandon_on_cancel=True)
        log.info("stopped")


TRACES_FLUSH_TIMEOUT = 5.0  # seconds the last spans may take to send at stop
WAITING_REPORT_INTERVAL = 5.0  # seconds between "waiting for <server>" lines at start-up


async def _settle_reporting(router: Router, interval: float = WAITING_REPORT_INTERVAL) -> None:
    """``router.settled()``, saying every ``interval`` seconds which servers are still starting."""
    began = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def report() -> None:
            while True:
                await trio.sleep(interval)
                elapsed = trio.current_time() - began
                for up in router.upstreams.values():
                    if up.enabled and not up.ready.is_set():
                        if up.cfg.remote:
                            log.info("waiting for %s: still connecting, %.0f s", up.name, elapsed)
                            continue
                        program = os.path.basename(up.cfg.command) or up.cfg.command
                        log.info("waiting for %s: %s is still running, %.0f s", up.name, program, elapsed)

        nursery.start_soon(report)
        await router.settled()
        nursery.cancel_scope.cancel()


def servers_summary(router: Router) -> str:
    """``2 of 4 servers ready (github, google skipped: GITHUB_TOKEN is not set)``: the servers not
    ready, grouped by the same state and reason."""
    ups = list(router.upstreams.values())
    ready = sum(1 for u in ups if u.state == "ready")
    groups: dict[str, list[str]] = {}
    for up in ups:
        if up.state == "ready":
            continue
        if up.state == "disabled":
            why = "disabled"
        elif up.state == "skipped":
            why = f"skipped: {up.last_error}" if up.last_error else "skipped"
        elif up.state in ("starting", "connecting") and not up.ready.is_set():
            why = f"still {up.state}"
        elif up.state == "needs-login":
            why = f"need a login (portero login {up.cfg.name})"
        else:
            why = f"failed: {up.last_error}" if up.last_error else f"not ready ({up.state})"
        groups.setdefault(why, []).append(up.name)
    text = f"{ready} of {len(ups)} server{'' if len(ups) == 1 else 's'} ready"
    if groups:
        text += " (" + "; ".join(f"{', '.join(names)} {why}" for why, names in groups.items()) + ")"
    return text


def _mcp_url(config: Config, binds: list[str]) -> str:
    """The client's endpoint: hypercorn's bound address (``http://127.0.0.1:8443``) plus ``/mcp``."""
    if binds and "://" in binds[0]:
        return binds[0].rstrip("/") + "/mcp"
    scheme = "https" if config.server.tls else "http"
    return f"{scheme}://{binds[0] if binds else _bind(config.server.host, config.server.port)}/mcp"


async def _start_http(
    nursery: trio.Nursery,
    config: Config,
    router: Router,
    sessions: Sessions,
    shutdown: trio.Event,
    guard: Guard | None = None,
    console: Console | None = None,
) -> tuple[list[str], trio.Event]:
    """Start hypercorn; returns the bound addresses and an event set when it has stopped."""
    hc = HyperConfig()
    hc.bind = [_bind(config.server.host, config.server.port)]
    hc.graceful_timeout = GRACEFUL_TIMEOUT
    hc.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    hc.keep_alive_max_requests = 1_000_000  # don't force clients to reconnect every 1000 calls
    hc.accesslog = None
    # No Date/Server header on every answer: clients don't use them, and Date costs a clock read
    # and formatting per response.
    hc.include_date_header = False
    hc.include_server_header = False
    hc.errorlog = logging.getLogger("hypercorn.error")
    if config.server.tls_cert and config.server.tls_key:
        hc.certfile = config.server.tls_cert
        hc.keyfile = config.server.tls_key
    hypercorn_fixes.install()
    app = build_app(router, sessions, config.server, guard, console)
    served = trio.Event()

    async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
        # No error of the HTTP server may take the upstreams and sessions down with it: after the
        # first successful start, a failure is logged and the server starts again.
        started = False

        class Started:
            def started(self, binds: list[str]) -> None:
                nonlocal started
                if not started:
                    started = True
                    task_status.started(binds)

        try:
            while True:
                try:
                    await hyper_serve(
                        app,  # type: ignore[arg-type]  # a plain ASGI callable with dict events
                        hc,
                        shutdown_trigger=shutdown.wait,
                        task_status=Started(),  # type: ignore[arg-type]
                    )
                    return
                except Exception as exc:
                    if not started or shutdown.is_set():
                        raise
                    log.error("the HTTP server failed (%s: %s); starting it again", type(exc).__name__, exc)
                    await trio.sleep(HTTP_RESTART_DELAY)
        finally:
            served.set()

    binds: list[str] = await nursery.start(run_http)
    return binds, served


async def _until(step: Callable[[], Awaitable[object]], hurry: trio.Event, timeout: float = math.inf) -> None:
    """Run ``step`` until it is done, ``hurry`` is set, or ``timeout`` passes, whichever is first."""
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:

            async def first(fn: Callable[[], Awaitable[object]]) -> None:
                await fn()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, step)
            nursery.start_soon(first, hurry.wait)


def _approval_timeout(config: Config) -> float:
    """How long a call waits for the admin: ``[telegram] approval_timeout``, else ``[console]``'s."""
    if config.telegram is not None:
        return config.telegram.approval_timeout
    return config.console.approval_timeout


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _watch_signals(
    shutdown: trio.Event,
    hurry: trio.Event,
    router: Router,
    config_path: str,
    env: Mapping[str, str],
    notifier: Notifier | None = None,
    status: Callable[[], str] | None = None,
    live: dict[str, Any] | None = None,
) -> None:
    """SIGHUP reloads; the first SIGTERM/SIGINT starts the shutdown, a second one hurries it (the
    HTTP drain is cut short) instead of killing the process before its children are stopped."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if notifier is not None:
                    notifier.reloading()
                await reload_config(
                    router, config_path, env, (live or {}).get("bot"), (live or {}).get("guard")
                )
                if notifier is not None and not shutdown.is_set():
                    notifier.ready(status() if status is not None else None)
            elif not shutdown.is_set():
                shutdown.set()
            else:
                log.warning("second stop signal: cutting the drain short")
                hurry.set()


async def reload_config(
    router: Router, config_path: str, env: Mapping[str, str], bot: Any = None, guard: Guard | None = None
) -> bool:
    """SIGHUP: re-read the config and apply it; a config with mistakes changes nothing.

    - Policies and replacements are compiled off to the side and installed by Router.reload in one
      step (no await in between), so a call sees either the old set or the new one, never a mix.
    - The ``[[mcp]]`` list: added servers start, removed ones stop, changed ones restart; unchanged
      ones keep running, and sessions survive.
    - ``[[client]]`` entries: the Guard takes the new tokens at once (a revoked client's token gets
      401 from the next request on), and each client's tools and rules apply to its next request.
    - ``[pins] mode``: every server's tools are reviewed again under the new mode.
    - ``[telegram]``: the approval timeout applies to approvals asked from now on; the admin chat
      and the longest grant at once. ``[console] approval_timeout`` too (without ``[telegram]``).
    - Sessions get ``notifications/<list>/list_changed`` for every list whose exposed content changed.
    - ``[server]`` settings (address, TLS, token…), the bot's token and API base, adding or
      removing ``[telegram]``, and the rest of ``[console]`` need a restart.
    """
    try:
        new = await trio.to_thread.run_sync(load_config, config_path, env)
        anonymizer = Anonymizer.from_config(new.replacements)
        policy = PolicyEngine(new.policies.default, dict(new.policies.rules))
        views = client_views(new.clients, new.policies)
    except (ConfigError, ValueError) as exc:
        log.error("reload refused, keeping the running config:\n%s", exc)
        return False
    router.reload(policy, anonymizer)
    router.pins.set_mode(new.pins.mode)  # every listing reviewed again under a new [pins] mode
    router.set_clients(views)  # no await since the policy: a call sees the old or the new set
    if guard is not None:
        guard.set_clients(new.clients)
    added, removed, restarted = router.apply_servers(new.mcp)
    if router.broker is not None:
        router.broker.timeout = _approval_timeout(new)
    old = router.config
    # The console's approval_timeout applies at once (above); turning it on or off, its session limits,
    # take a restart.
    console_changed = attrs.evolve(new.console, approval_timeout=0) != attrs.evolve(
        old.console, approval_timeout=0
    )
    needs_restart = [
        what
        for what, changed in (
            ("[server]", new.server != old.server),
            ("[console]", console_changed),
            ("[telegram] (added, removed, or its bot token or API base)",
             (new.telegram is None) != (old.telegram is None)
             or (bot is not None and new.telegram is not None and not bot.apply_settings(new.telegram))),
        )
        if changed
    ]  # fmt: skip
    log.info(
        "reloaded %s: %d policy rules, %d replacements, %d clients; "
        "servers added %s, removed %s, restarted %s%s",
        config_path,
        len(new.policies.rules),
        len(new.replacements),
        len(new.clients),
        ", ".join(added) or "none",
        ", ".join(removed) or "none",
        ", ".join(restarted) or "none",
        f" ({' and '.join(needs_restart)} changed: that takes a restart)" if needs_restart else "",
    )
    return True


async def _start_bot(
    nursery: trio.Nursery,
    config: Config,
    broker: ApprovalBroker,
    router: Router,
    store: Store,
    approvers: Approvers,
) -> Any:
    from .telegram.bot import TelegramBot

    assert config.telegram is not None

    def status() -> dict[str, Any]:
        return {
            "children": router.upstream_status(),
            "uptime_s": router.uptime(),
            "sessions": len(router.sessions),
            "pending": len(broker.pending()),
        }

    bot = TelegramBot(config.telegram, broker, status, store)
    bot.rules = router  # /allow /deny /ask /unrule /rules and the Always allow / Always deny buttons
    approvers.add(bot)  # next to the console, if there is one
    await nursery.start(bot.run)

    def needs_login(name: str) -> None:
        bot.notify_admin(f"Server {name} needs a login: run `portero login {name}` on the gateway's machine.")

    router.on_needs_login = needs_login
    router.on_call_finished = bot.record_call  # the activity feed ([telegram] activity)
    router.tell_needs_login()  # the servers that needed one before the bot was up

    # Pinned tool definitions: one message per change, its buttons decide (the questions asked before
    # the bot was up go out now).
    bot.pin_decider = lambda key, approve: router.pins.decide(key, approve, by="telegram")
    router.pins.attach(bot.ask_pin)
    return bot
