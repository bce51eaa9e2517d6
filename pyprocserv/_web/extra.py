"""The browser console as an extra: checked before the start, run under a supervisor.

The settings are the ``--web*`` options (:class:`WebOptions`): a ``Config`` holds them for
``pyprocserv --web``, host mode's record of ``pyprocserv-manage run --web`` (``_apps/wiring.py``)
for a whole host.

Rules:
1. :func:`problem` says, before the server starts, what would stop the console: the ``[web]``
   extra not installed (naming ``pip install 'pyprocserv[web]'``), a credentials file that
   cannot be read or parsed, a certificate or key that does not load. The programs refuse to
   start with that message, as they do for the PV channel without caproto.
2. :func:`serve` serves the console of a fleet (``.fleet``) on ``settings.web`` until
   cancelled, reporting itself started once its port is bound (``serve.serve_asgi``); https
   when a certificate is configured. :func:`run` is one server's: a fleet of one.
"""

from __future__ import annotations

import importlib
import ssl
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from .._shell.extras import Root
    from .fleet import Fleet


class WebOptions(Protocol):
    """The browser console's options, as ``Config`` holds them (rule 1 and 2)."""

    @property
    def web(self) -> tuple[str, int] | None: ...

    @property
    def web_users(self) -> str | None: ...

    @property
    def web_cert(self) -> str | None: ...

    @property
    def web_key(self) -> str | None: ...

    @property
    def web_base(self) -> str: ...

    @property
    def web_proxies(self) -> tuple[str, ...]: ...

    @property
    def web_proxy_user(self) -> str | None: ...

    @property
    def web_origin(self) -> str | None: ...


def problem(config: WebOptions) -> str | None:
    """What stops the browser console of ``config`` from working, or None (rule 1)."""
    try:
        importlib.import_module("anycorn")
        importlib.import_module("starlette")
    except ImportError as exc:
        return f"the browser console needs starlette and anycorn ({exc}): pip install 'pyprocserv[web]'"
    from .._core.webusers import CredentialsError, parse

    if config.web_users is not None:
        try:
            with open(config.web_users, encoding="utf-8", errors="surrogateescape") as f:
                parse(f.read(), config.web_users)
        except OSError as exc:
            return f"--web-users {config.web_users}: {exc.strerror}"
        except CredentialsError as exc:
            return f"--web-users: {exc}"
    try:
        tls_context(config)
    except (OSError, ssl.SSLError) as exc:
        return f"--web-cert {config.web_cert} / --web-key {config.web_key}: cannot load them ({exc})"
    return None


def tls_context(config: WebOptions) -> ssl.SSLContext | None:
    if config.web_cert is None or config.web_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.web_cert, config.web_key)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def serve(fleet: Fleet, settings: WebOptions, *, title: str,
                task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the browser console of ``fleet`` until cancelled (rule 2)."""
    from .app import build_app
    from .auth import WebAuth
    from .serve import serve_asgi

    assert settings.web is not None
    app = build_app(fleet, WebAuth.for_config(settings), title=title)
    host, port = settings.web
    await serve_asgi(app, host, port, ssl_context=tls_context(settings), task_status=task_status)


async def run(root: Root, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the browser console of one server, ``root``, until cancelled (rule 2)."""
    from .fleet import OneServer

    await serve(OneServer(root), root.config, title=root.config.child_name, task_status=task_status)
