"""Count monitor callbacks with pyepics on libca, as camonitor and archivers see them.

Usage: pyepics_monitor.py NAME... Subscribes to each NAME and to the last one, a ticking PV,
prints "ready" once every first update is in, then, after a line on stdin, waits for two more
updates of the ticking PV and prints one JSON object: each NAME's updates as
[value as a string, severity]. The CA environment comes from the caller.
"""

import json
import sys
import threading
import time

import epics

names = sys.argv[1:]
updates = {name: [] for name in names}
lock = threading.Lock()


def keep(pvname=None, char_value=None, severity=None, **_):
    with lock:
        updates[pvname].append([char_value, severity])


pvs = [epics.PV(name, callback=keep, form="time", auto_monitor=True) for name in names]


def wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            if condition():
                return
        time.sleep(0.01)
    raise SystemExit(f"timed out: {updates}")


wait(lambda: all(updates[name] for name in names))
print("ready", flush=True)
sys.stdin.readline()
ticker = names[-1]
with lock:
    target = len(updates[ticker]) + 2
wait(lambda: len(updates[ticker]) >= target)
with lock:
    print(json.dumps(updates), flush=True)
for pv in pvs:
    pv.disconnect()
