"""The browser console's pages: HTML with small inline scripts, no build step, no framework.

Rules:
1. Every value that comes from outside (an IOC's name, a user name, the log's text) goes
   through :func:`html.escape`; values for the scripts go in ``data-`` attributes, never into
   script text, and the scripts put names into the page as text (``textContent``), never as HTML.
2. Links are relative (the status table is the base, an IOC's pages are two levels below it:
   ``ioc/NAME/console``), so the pages work behind a proxy that serves them under any prefix.
   A name in a link is URL-quoted whole, so it is one path segment whatever it contains.
3. The status table is built and kept up to date from ``ws/status`` (the server pushes a
   snapshot on every change); between messages the uptimes tick on the page. When the socket
   closes the page says "reconnecting" and tries again after 0.5 s, doubling to 10 s; a visitor
   logged out meanwhile (``api/status`` answers 401) goes to the login page.
4. Each row links to the IOC's console (operators), its read-only spy view and its log; the
   buttons are shown to operators only. The server checks the role again on every action and
   every console, the page only spares viewers a 403.
5. The console page writes the replay, then tells the server it is ready (``_core.webterm``)
   once xterm.js has parsed it, so the terminal's answers to queries in old output never reach
   the child; it sends its size (fit addon) at once and on every resize. A read-only page sends
   neither keys nor sizes, and the server would drop them anyway.
"""

from __future__ import annotations

import json
from html import escape
from urllib.parse import quote

UP = "../../"  # from an IOC's pages (ioc/NAME/...) back to the base (rule 2)

_STYLE = """
body { font-family: sans-serif; margin: 1em 1.2em; background: #fafafa; color: #222; }
nav a, nav button { margin-right: 1em; }
nav form { display: inline; }
table.status { border-collapse: collapse; margin: 1em 0; }
table.status th { text-align: left; padding: .3em .7em .3em 0; font-weight: normal; color: #555; font-size: .95em;
  border-bottom: 1px solid #ccc; }
table.status td { padding: .3em .7em .3em 0; font-family: monospace; font-size: .95em; }
table.status td, table.status th { white-space: nowrap; }
table.status td a { margin-right: .5em; }
td.actions button { margin-right: .2em; padding: .15em .4em; }
tr.stopped td.state { color: #a00; }
tr.running td.state { color: #070; }
.error { color: #a00; }
#link { color: #777; font-style: italic; }
pre.log { background: #111; color: #ddd; padding: 1em; overflow: auto; max-height: 80vh; }
"""


def _page(title: str, body: str, *, head: str = "", user: str | None = None, csrf: str = "",
          logout: bool = True, up: str = "", data: dict[str, str] | None = None) -> str:
    """A whole page; ``up`` leads from its URL back to the base, ``data`` goes on ``<body>``."""
    nav = ""
    if user is not None:
        logout_form = (f'<form method="post" action="{up}logout"><input type="hidden" name="csrf" '
                       f'value="{escape(csrf)}"><button type="submit">log out {escape(user)}</button></form>'
                       ) if logout else ""
        nav = f'<nav><a href="{up or "./"}">all IOCs</a>{logout_form}</nav>'
    attributes = "".join(f' data-{key}="{escape(value)}"' for key, value in (data or {}).items())
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{_STYLE}</style>{head}</head><body{attributes}>{nav}{body}</body></html>')


def login_page(title: str, *, error: str = "") -> str:
    shown = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    return _page(f"{title}: log in", f"""<h1>{escape(title)}</h1>{shown}
<form method="post" action="login">
<p><label>user <input name="user" id="user" autocomplete="username" autofocus required></label></p>
<p><label>password <input name="password" id="password" type="password" autocomplete="current-password"
 required></label></p>
<p><button type="submit" id="login">log in</button></p>
</form>""")


_COLUMNS = (("state", "state"), ("pid", "pid"), ("uptime", "uptime"), ("restarts", "restarts"),
            ("clients", "clients"), ("restart mode", "mode"), ("watchdog", "watchdog"),
            ("last exit", "last_exit"))

_STATUS_SCRIPT = """
const body = document.body, csrf = body.dataset.csrf, operator = body.dataset.operator === "yes";
const KEYS = JSON.parse(body.dataset.columns), ACTIONS = JSON.parse(body.dataset.actions);
const table = document.getElementById("iocs"), problem = document.getElementById("problem");
const link = document.getElementById("link"), rows = new Map();
let shown = [];
function ago(t) { if (t == null) return "-"; let s = Math.max(0, Math.round(Date.now() / 1000 - t));
  const d = Math.floor(s / 86400); s %= 86400; const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + s + "s" : s + "s"; }
function cells(st) {
  if (!st.serving) return {state: "no server (retrying)"};
  return {
    state: st.running ? "running" : (st.waiting_for_start ? "waiting for start" : "stopped"),
    pid: st.pid == null ? "-" : String(st.pid),
    uptime: st.running ? ago(st.child_started_at) : "-",
    restarts: String(Math.max(0, st.start_count - 1)),
    clients: st.users + " rw, " + st.loggers + " ro",
    mode: st.restart_mode,
    watchdog: st.watchdog == null ? "off" : st.watchdog + " (" + st.watchdog_restarts + " restarts)",
    last_exit: st.last_exit_code == null ? "-" : (st.last_exit_code < 0 ? "signal " + (-st.last_exit_code)
      : "code " + st.last_exit_code) + ", " + ago(st.last_exit_at) + " ago",
  };
}
function add(parent, tag, text, attrs) { const e = document.createElement(tag);
  if (text != null) e.textContent = text; for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  parent.appendChild(e); return e; }
function row(name) {
  let tr = rows.get(name);
  if (tr) return tr;
  tr = document.createElement("tr"); tr.dataset.ioc = name;
  add(tr, "td", name, {"data-key": "name"});
  for (const k of KEYS) add(tr, "td", "", {"data-key": k, "class": k});
  const links = add(tr, "td", null, {"class": "links"}), url = "ioc/" + encodeURIComponent(name) + "/";
  if (operator) add(links, "a", "console", {href: url + "console", "data-link": "console"});
  add(links, "a", "spy", {href: url + "console?spy=1", "data-link": "spy"});
  add(links, "a", "log", {href: url + "log", "data-link": "log"});
  if (operator) { const td = add(tr, "td", null, {"class": "actions"});
    for (const a of ACTIONS) add(td, "button", a, {"data-action": a}).onclick = () => act(name, a); }
  rows.set(name, tr); return tr;
}
function render() {
  const names = new Set(shown.map((st) => st.name));
  for (const [name, tr] of rows) if (!names.has(name)) { tr.remove(); rows.delete(name); }
  shown.forEach((st, i) => {
    const tr = row(st.name), values = cells(st);
    if (table.children[i] !== tr) table.insertBefore(tr, table.children[i] || null);  // the server's order
    tr.className = st.serving && st.running ? "running" : "stopped";
    for (const k of KEYS) tr.querySelector('[data-key="' + k + '"]').textContent = values[k] ?? "-";
  });
  document.getElementById("none").hidden = shown.length > 0;
}
async function act(name, action) {
  const r = await fetch("api/ioc/" + encodeURIComponent(name) + "/" + action,
                        {method: "POST", headers: {"X-CSRF-Token": csrf}});
  problem.textContent = r.ok ? "" : name + ": " + action + ": " + (await r.text());
}
let wait = 500;
function connect() {
  const url = new URL("ws/status", location.href);
  url.protocol = location.protocol == "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.onopen = () => { wait = 500; link.textContent = ""; };
  ws.onmessage = (event) => { shown = JSON.parse(event.data); window.statusMessages = (window.statusMessages || 0) + 1;
    render(); };
  ws.onclose = async () => {
    link.textContent = "reconnecting…";
    try { const r = await fetch("api/status", {cache: "no-store"}); if (r.status == 401) { location.href = "login"; return; } }
    catch (e) { /* the server is away: try again later */ }
    setTimeout(connect, wait); wait = Math.min(wait * 2, 10000);
  };
}
connect();
setInterval(render, 1000);  // the uptimes tick between messages
"""


def status_page(title: str, *, user: str, operator: bool, actions: tuple[str, ...], csrf: str,
                logout: bool) -> str:
    """The table of every IOC the user may see, filled by its script; ``actions``: the buttons of
    each row, for operators."""
    heads = "".join(f"<th>{label}</th>" for label, _ in _COLUMNS)
    extra = "<th></th><th></th>" if operator else "<th></th>"
    body = (f'<h1>{escape(title)}</h1><p id="link"></p>'
            f'<table class="status"><thead><tr><th>IOC</th>{heads}{extra}</tr></thead>'
            f'<tbody id="iocs"></tbody></table><p id="none" hidden>No IOC to show.</p>'
            f'<p class="error" id="problem"></p><script>{_STATUS_SCRIPT}</script>')
    return _page(title, body, user=user, csrf=csrf, logout=logout,
                 data={"csrf": csrf, "operator": "yes" if operator else "no",
                       "columns": json.dumps([key for _, key in _COLUMNS]), "actions": json.dumps(actions)})


_CONSOLE_SCRIPT = """
const term = new Terminal({scrollback: 10000, cursorBlink: true,
  disableStdin: document.body.dataset.operator !== "yes"});
const operator = document.body.dataset.operator === "yes";
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal"));
window.term = term;
const url = new URL(document.body.dataset.socket, location.href);
url.protocol = location.protocol == "https:" ? "wss:" : "ws:";
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const encoder = new TextEncoder();
function sendSize() { if (operator && ws.readyState == 1) ws.send(JSON.stringify({resize: [term.cols, term.rows]})); }
ws.onopen = () => { fit.fit(); sendSize(); term.focus(); };
ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    if (JSON.parse(event.data).replayed) term.write("", () => { ws.send('{"ready": true}'); window.consoleReady = true; });
  } else term.write(new Uint8Array(event.data));
};
ws.onclose = (event) => { window.consoleClosed = event.code;
  term.write("\\r\\n\\x1b[7m connection closed (" + event.code + ") \\x1b[0m\\r\\n"); };
// A paste goes in messages of at most 16 KiB: the server takes no message over 64 KiB.
function sendKeys(bytes) { if (!operator || ws.readyState != 1) return;
  for (let i = 0; i < bytes.length; i += 16384) ws.send(bytes.subarray(i, i + 16384)); }
term.onData((data) => sendKeys(encoder.encode(data)));
term.onBinary((data) => sendKeys(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
term.onResize(sendSize);
window.addEventListener("resize", () => fit.fit());
"""


def _ioc_links(quoted: str, *, operator_link: bool) -> str:
    """The links between one IOC's pages, from ``ioc/NAME/x``."""
    links = [f'<a href="{UP}ioc/{quoted}/console">console</a>'] if operator_link else []
    links += [f'<a href="{UP}ioc/{quoted}/console?spy=1">spy</a>', f'<a href="{UP}ioc/{quoted}/log">log</a>']
    return '<p class="links">' + " ".join(links) + "</p>"


def console_page(ioc: str, *, user: str, operator: bool, may_write: bool, csrf: str, logout: bool) -> str:
    """The console of ``ioc``: read-write if ``operator``, else read only (the spy view);
    ``may_write``: the user may open the read-write one (a link to it)."""
    quoted = quote(ioc, safe="")
    socket = f"{UP}ws/ioc/{quoted}/console" + ("" if operator else "?spy=1")
    mode = "" if operator else " (read only)"
    head = (f'<link rel="stylesheet" href="{UP}static/xterm/xterm.css">'
            f'<script src="{UP}static/xterm/xterm.js"></script><script src="{UP}static/xterm/addon-fit.js"></script>'
            '<style>#terminal { height: calc(100vh - 12em); }</style>')
    body = (f'<h1>{escape(ioc)}{mode}</h1>{_ioc_links(quoted, operator_link=may_write)}'
            f'<div id="terminal"></div><script>{_CONSOLE_SCRIPT}</script>')
    return _page(f"{ioc}: console", body, head=head, user=user, csrf=csrf, logout=logout, up=UP,
                 data={"operator": "yes" if operator else "no", "socket": socket})


_LOG_SCRIPT = """
const log = document.getElementById("log"), box = document.getElementById("follow");
const note = document.getElementById("follow-note");
const KEEP = 1 << 19;  // characters of log text the page keeps: the oldest go first
let offset = Number(document.body.dataset.end), shown = log.textContent.length, ws = null;
log.scrollTop = log.scrollHeight;
function add(text) {
  const last = log.lastChild;
  if (last && last.nodeType == 3 && last.length < 4096) last.appendData(text); else log.append(text);
  shown += text.length;
  while (shown > KEEP && log.firstChild) {
    const first = log.firstChild, over = shown - KEEP;
    if (first.length <= over) { shown -= first.length; first.remove(); }
    else { first.deleteData(0, over); shown -= over; }
  }
  log.scrollTop = log.scrollHeight;
}
function follow(on) {
  if (ws) { const old = ws; ws = null; old.close(); }
  note.textContent = "";
  if (!on) return;
  const url = new URL(document.body.dataset.socket, location.href);
  url.protocol = location.protocol == "https:" ? "wss:" : "ws:";
  url.searchParams.set("from", String(offset));
  const sock = new WebSocket(url), decoder = new TextDecoder();
  sock.binaryType = "arraybuffer";
  ws = sock;
  sock.onmessage = (event) => {
    if (typeof event.data !== "string") {
      offset += event.data.byteLength; add(decoder.decode(event.data, {stream: true})); return;
    }
    const m = JSON.parse(event.data);
    if (m.skipped) { offset += m.skipped;
      add("\\n[" + m.skipped + " bytes of the log skipped: this page fell behind]\\n"); }
    if (m.skipped === null) add("\\n[some output was skipped: log files rotated away unread]\\n");
    if (m.file) { offset = 0; add("\\n[a new log file begins]\\n"); }
    if (m.error) note.textContent = m.error;
  };
  sock.onclose = (event) => { if (ws !== sock) return;
    ws = null; box.checked = false; window.logFollowClosed = event.code;
    note.textContent = (note.textContent || "following stopped") + " (" + event.code + ")"; };
  log.scrollTop = log.scrollHeight;
}
box.onchange = () => follow(box.checked);
if (box.checked) follow(true);
"""


def log_page(ioc: str, path: str, text: str, *, end: int, user: str, csrf: str, logout: bool,
             skipped: bool) -> str:
    """The log's tail, ``text``, which ends at byte ``end`` of the file; a "follow" box appends
    what is written next (``ws/ioc/NAME/log``), keeping the view at the bottom and at most KEEP
    characters of text."""
    quoted = quote(ioc, safe="")
    note = "<p>(the start of the file is not shown)</p>" if skipped else ""
    body = (f'<h1>{escape(ioc)}: log</h1><p>{escape(path)} <a href="log/download">download</a> '
            f'<label><input type="checkbox" id="follow"> follow</label> <span class="error" id="follow-note">'
            f'</span></p>{note}<pre class="log" id="log">{escape(text)}</pre><script>{_LOG_SCRIPT}</script>')
    return _page(f"{ioc}: log", body, user=user, csrf=csrf, logout=logout, up=UP,
                 data={"socket": f"{UP}ws/ioc/{quoted}/log", "end": str(int(end))})
