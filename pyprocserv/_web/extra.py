"""The browser console as an extra of one server: checked before the start, run under its supervisor.

Rules:
1. :func:`problem` says, before the server starts, what would stop the console: the ``[web]``
   extra not installed (naming ``pip install 'pyprocserv[web]'``), a credentials file that
   cannot be read or parsed, a certificate or key that does not load. The programs refuse to
   start with that message, as they do for the PV channel without caproto.
2. :func:`run` serves the console of a ``Root`` on ``config.web`` until cancelled, reporting
   itself started once its port is bound (``serve.serve_asgi``); https when a certificate is
   configured.
"""

from __future__ import annotations

import importlib
import ssl
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .._core.config import Config
    from .._shell.extras import Root


def problem(config: Config) -> str | None:
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


def tls_context(config: Config) -> ssl.SSLContext | None:
    if config.web_cert is None or config.web_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.web_cert, config.web_key)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def run(root: Root, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``root``'s browser console until cancelled (rule 2)."""
    from .app import build_app
    from .auth import WebAuth
    from .serve import serve_asgi

    config = root.config
    assert config.web is not None
    app = build_app(root, WebAuth.for_config(config))
    host, port = config.web
    await serve_asgi(app, host, port, ssl_context=tls_context(config), task_status=task_status)
