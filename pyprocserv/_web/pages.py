"""The browser console's pages: HTML with small inline scripts, no build step, no framework.

Rules:
1. Every value that comes from outside (the IOC's name, a user name, the log's text) goes
   through :func:`html.escape`; values for the scripts go in ``data-`` attributes, never into
   script text.
2. Links are relative to the base path (``--web-base``), so the pages work behind a proxy that
   serves them under any prefix.
3. The status page asks ``api/status`` once a second and shows the buttons to operators only;
   the server checks the role again on every action, the page only spares viewers a 403.
4. The console page writes the replay, then tells the server it is ready (``_core.webterm``)
   once xterm.js has parsed it, so the terminal's answers to queries in old output never reach
   the child; it sends its size (fit addon) at once and on every resize.
"""

from __future__ import annotations

from html import escape

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
nav a, nav button { margin-right: 1em; }
nav form { display: inline; }
table.status { border-collapse: collapse; margin: 1em 0; }
table.status th { text-align: left; padding: .25em 1em .25em 0; font-weight: normal; color: #555; }
table.status td { padding: .25em 1em .25em 0; font-family: monospace; font-size: 1.1em; }
.actions button { margin-right: .5em; padding: .4em 1em; }
.error { color: #a00; }
pre.log { background: #111; color: #ddd; padding: 1em; overflow: auto; max-height: 80vh; }
"""


def _page(title: str, body: str, *, head: str = "", user: str | None = None, csrf: str = "",
          logout: bool = True) -> str:
    nav = ""
    if user is not None:
        logout_form = (f'<form method="post" action="logout"><input type="hidden" name="csrf" value="{escape(csrf)}">'
                  f'<button type="submit">log out {escape(user)}</button></form>') if logout else ""
        nav = f'<nav><a href="./">status</a><a href="console">console</a><a href="log">log</a>{logout_form}</nav>'
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{_STYLE}</style>{head}</head><body>{nav}{body}</body></html>')


def login_page(ioc: str, *, error: str = "") -> str:
    shown = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    return _page(f"{ioc}: log in", f"""<h1>{escape(ioc)}</h1>{shown}
<form method="post" action="login">
<p><label>user <input name="user" id="user" autocomplete="username" autofocus required></label></p>
<p><label>password <input name="password" id="password" type="password" autocomplete="current-password"
 required></label></p>
<p><button type="submit" id="login">log in</button></p>
</form>""")


_STATUS_ROWS = (("state", "state"), ("pid", "pid"), ("uptime", "uptime"), ("restarts", "restarts"),
                ("clients", "clients"), ("auto restart", "mode"), ("watchdog", "watchdog"),
                ("last exit", "last_exit"))
_ACTIONS = ("start", "stop", "restart", "kill", "toggle")

_STATUS_SCRIPT = """
const body = document.body, csrf = body.dataset.csrf;
function ago(t) { if (t == null) return "-"; let s = Math.max(0, Math.round(Date.now() / 1000 - t));
  const d = Math.floor(s / 86400); s %= 86400; const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60; return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + s + "s"; }
function show(st) {
  const cells = {
    state: st.running ? "running" : (st.waiting_for_start ? "waiting for start" : "stopped"),
    pid: st.pid == null ? "-" : String(st.pid),
    uptime: st.running ? ago(st.child_started_at) : "-",
    restarts: String(Math.max(0, st.start_count - 1)),
    clients: st.users + " console, " + st.loggers + " log",
    mode: st.restart_mode,
    watchdog: st.watchdog == null ? "off" : st.watchdog + " (" + st.watchdog_restarts + " restarts)",
    last_exit: st.last_exit_code == null ? "-" : (st.last_exit_code < 0 ? "signal " + (-st.last_exit_code)
      : "code " + st.last_exit_code) + ", " + ago(st.last_exit_at) + " ago",
  };
  for (const [k, v] of Object.entries(cells)) document.getElementById(k).textContent = v;
}
async function poll() {
  try { const r = await fetch("api/status", {cache: "no-store"});
    if (r.ok) { show(await r.json()); document.getElementById("problem").textContent = ""; }
    else if (r.status == 401) location.href = "login";
  } catch (e) { document.getElementById("problem").textContent = "server unreachable"; }
}
async function act(action) {
  const r = await fetch("api/" + action, {method: "POST", headers: {"X-CSRF-Token": csrf}});
  document.getElementById("problem").textContent = r.ok ? "" : action + ": " + (await r.text());
  poll();
}
for (const b of document.querySelectorAll("button[data-action]")) b.onclick = () => act(b.dataset.action);
poll(); setInterval(poll, 1000);
"""


def status_page(ioc: str, *, user: str, operator: bool, csrf: str, logout: bool) -> str:
    rows = "".join(f'<tr><th>{label}</th><td id="{key}">…</td></tr>' for label, key in _STATUS_ROWS)
    buttons = ""
    if operator:
        buttons = '<p class="actions">' + "".join(
            f'<button data-action="{a}" id="{a}">{a}</button>' for a in _ACTIONS) + "</p>"
    body = (f'<h1>{escape(ioc)}</h1><table class="status">{rows}</table>{buttons}'
            f'<p class="error" id="problem"></p><script>{_STATUS_SCRIPT}</script>')
    page = _page(ioc, body, user=user, csrf=csrf, logout=logout)
    return page.replace("<body>", f'<body data-csrf="{escape(csrf)}">', 1)


_CONSOLE_SCRIPT = """
const term = new Terminal({scrollback: 10000, cursorBlink: true,
  disableStdin: document.body.dataset.operator !== "yes"});
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal"));
window.term = term;
const url = new URL("ws/console", location.href);
url.protocol = location.protocol == "https:" ? "wss:" : "ws:";
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const encoder = new TextEncoder();
function sendSize() { if (ws.readyState == 1) ws.send(JSON.stringify({resize: [term.cols, term.rows]})); }
ws.onopen = () => { fit.fit(); sendSize(); term.focus(); };
ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    if (JSON.parse(event.data).replayed) term.write("", () => { ws.send('{"ready": true}'); window.consoleReady = true; });
  } else term.write(new Uint8Array(event.data));
};
ws.onclose = (event) => { window.consoleClosed = event.code;
  term.write("\\r\\n\\x1b[7m connection closed (" + event.code + ") \\x1b[0m\\r\\n"); };
// A paste goes in messages of at most 16 KiB: the server takes no message over 64 KiB.
function sendKeys(bytes) { if (ws.readyState != 1) return;
  for (let i = 0; i < bytes.length; i += 16384) ws.send(bytes.subarray(i, i + 16384)); }
term.onData((data) => sendKeys(encoder.encode(data)));
term.onBinary((data) => sendKeys(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
term.onResize(sendSize);
window.addEventListener("resize", () => fit.fit());
"""


def console_page(ioc: str, *, user: str, operator: bool, csrf: str, logout: bool) -> str:
    mode = "" if operator else " (read only)"
    head = ('<link rel="stylesheet" href="static/xterm/xterm.css">'
            '<script src="static/xterm/xterm.js"></script><script src="static/xterm/addon-fit.js"></script>'
            '<style>#terminal { height: calc(100vh - 10em); }</style>')
    body = (f'<h1>{escape(ioc)}{mode}</h1><div id="terminal"></div>'
            f'<script>{_CONSOLE_SCRIPT}</script>')
    page = _page(f"{ioc}: console", body, head=head, user=user, csrf=csrf, logout=logout)
    return page.replace("<body>", f'<body data-operator="{"yes" if operator else "no"}">', 1)


def log_page(ioc: str, path: str, text: str, *, user: str, csrf: str, logout: bool, skipped: bool) -> str:
    note = "<p>(the start of the file is not shown)</p>" if skipped else ""
    body = (f'<h1>{escape(ioc)}: log</h1><p>{escape(path)} <a href="log/download">download</a></p>{note}'
            f'<pre class="log" id="log">{escape(text)}</pre>')
    return _page(f"{ioc}: log", body, user=user, csrf=csrf, logout=logout)
