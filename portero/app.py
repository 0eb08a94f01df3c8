"""Composition root: the nursery tree and the shutdown order.

    run_gateway
    └── trio.run(serve)
        ├── signal watcher (SIGTERM/SIGINT → shutdown; SIGHUP → reload, later)
        ├── store (SQLite, closed last)
        ├── children (supervised; stopped after HTTP and Telegram)
        ├── Telegram bot (if configured)
        ├── session janitor
        └── hypercorn (drains first)

Shutdown order is the nesting order: HTTP drains, pending approvals are denied, Telegram stops,
children stop (stdin closed, SIGTERM, SIGKILL, each bounded), the store closes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve

from .http import build_app
from .router import Gateway

log = logging.getLogger("portero")

SECRET_PLACEHOLDER = "***"


class _RedactFilter(logging.Filter):
    """Last line of defence: no configured secret ever reaches a log line."""

    def __init__(self, secrets_: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets_ if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, SECRET_PLACEHOLDER)
            record.msg = msg
            record.args = None
        return True


def setup_logging(config: Any) -> None:
    level = getattr(logging, str(config.server.log_level).upper(), logging.INFO)
    root = logging.getLogger()
    root.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    secrets_ = [config.server.bearer_token]
    if config.telegram is not None:
        secrets_.append(config.telegram.bot_token)
    redact = _RedactFilter(secrets_)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.server.log_file:
        handlers.append(logging.FileHandler(config.server.log_file))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(redact)
        root.addHandler(h)
    root.setLevel(level)
    # Quiet chatty libraries; never let httpx log request URLs (the bot token is in them).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


def run_gateway(config: Any, env: dict[str, str] | None = None) -> int:
    setup_logging(config)
    env = dict(os.environ if env is None else env)
    from .store import StoreError

    failed = False
    try:
        trio.run(serve, config, env)
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
    config: Any, env: dict[str, str], *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    from .approvals import ApprovalBroker
    from .store import Store

    db_path = os.path.join(config.server.data_dir, "gateway.db")
    store = await Store.open(db_path)
    try:
        approval_timeout = config.telegram.approval_timeout if config.telegram is not None else 120.0
        broker = await ApprovalBroker.open(store, timeout=approval_timeout, approver=None)
        gateway = Gateway(config, env, store=store, broker=broker)
        shutdown = trio.Event()

        async with trio.open_nursery() as outer:
            outer.start_soon(_watch_signals, shutdown, gateway, config.path, env)
            await outer.start(gateway.run_children)
            async with trio.open_nursery() as middle:
                if config.telegram is not None:
                    await _start_bot(middle, config, broker, gateway, store)
                middle.start_soon(_session_janitor, gateway, config.server.session_idle_timeout)
                hc = HyperConfig()
                hc.bind = [_bind(config.server.host, config.server.port)]
                hc.graceful_timeout = 5.0
                hc.keep_alive_timeout = 75.0
                hc.keep_alive_max_requests = 1_000_000  # don't force clients to reconnect every 1000 calls
                hc.accesslog = None
                hc.errorlog = logging.getLogger("hypercorn.error")
                if config.server.tls_cert and config.server.tls_key:
                    hc.certfile = config.server.tls_cert
                    hc.keyfile = config.server.tls_key
                app = build_app(gateway, config)
                served = trio.Event()

                async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
                    try:
                        await hyper_serve(
                            app,  # type: ignore[arg-type]  # a plain ASGI callable with dict events
                            hc,
                            shutdown_trigger=shutdown.wait,
                            task_status=task_status,
                        )
                    finally:
                        served.set()

                binds = await middle.start(run_http)
                for b in binds:
                    # Tests and scripts read this line to learn the bound port.
                    print(f"portero: listening on {b}", file=sys.stderr, flush=True)
                log.info("portero listening on %s (%d servers)", ", ".join(binds), len(gateway.children))
                task_status.started(binds)
                await shutdown.wait()
                log.info("shutting down")
                # Deny what still waits for the admin, so those requests can answer; hypercorn drains.
                gateway.closing.set()
                await broker.shutdown()
                log.debug("approvals closed; draining HTTP")
                with trio.move_on_after(hc.graceful_timeout + 1):
                    await served.wait()
                log.debug("HTTP stopped")
                middle.cancel_scope.cancel()
            # HTTP and Telegram are down: stop the children.
            log.debug("stopping children")
            outer.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
        log.info("stopped")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


STREAM_KEEP = 300.0  # seconds a finished, undelivered POST stream waits for its client to resume it


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _watch_signals(
    shutdown: trio.Event, gateway: Gateway, config_path: str, env: dict[str, str]
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await reload_config(gateway, config_path, env)
                continue
            shutdown.set()
            return


async def reload_config(gateway: Gateway, config_path: str, env: dict[str, str]) -> bool:
    """SIGHUP: re-read the config and swap policies and anonymization rules atomically.

    The new rules are compiled off to the side and installed by Gateway.reload in one step
    (no await in between), so a call sees either the old set or the new one, never a mix. A config
    with mistakes changes nothing. Server, child and Telegram settings need a restart.
    """
    from .anonymize import Anonymizer
    from .config import ConfigError, load_config
    from .policy import PolicyEngine

    try:
        new = await trio.to_thread.run_sync(load_config, config_path, env)
        anonymizer = Anonymizer.from_config(new.replacements)
        policy = PolicyEngine(new.policies.default, dict(new.policies.rules))
    except (ConfigError, ValueError) as exc:
        log.error("reload refused, keeping the running config:\n%s", exc)
        return False
    gateway.reload(policy, anonymizer)
    log.info(
        "reloaded %s: %d policy rules, %d replacements (server and child settings need a restart)",
        config_path,
        len(new.policies.rules),
        len(new.replacements),
    )
    return True


async def _session_janitor(gateway: Gateway, idle_timeout: float) -> None:
    while True:
        await trio.sleep(min(60.0, max(idle_timeout / 4, 0.5)))
        now = time.monotonic()
        for sid, s in list(gateway.sessions.items()):
            for key, stream in list(s.post_streams.items()):
                # A streamed answer nobody came back for is kept a while, then dropped.
                if stream.done and stream.finished_at is not None and now - stream.finished_at > STREAM_KEEP:
                    del s.post_streams[key]
            if not s.inflight and not s.listening and now - s.last_seen > idle_timeout:
                gateway.end_session(sid)
                log.info("session %s… expired after %.0fs idle", sid[:6], idle_timeout)


async def _start_bot(nursery: trio.Nursery, config: Any, broker: Any, gateway: Gateway, store: Any) -> Any:
    from .telegram import TelegramBot

    def status() -> dict[str, Any]:
        _, health = gateway.health()
        return {**health, "pending": len(broker.pending())}

    bot = TelegramBot(config.telegram, broker, status, store)
    broker.approver = bot
    await nursery.start(bot.run)
    return bot
