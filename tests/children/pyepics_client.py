"""Drive pyprocserv's PVs with pyepics on libca, as an EPICS site's script would.

Usage: pyepics_client.py PREFIX. Prints one JSON line with what it read after each command.
The CA environment (EPICS_CA_ADDR_LIST, ...) comes from the caller.
"""

import json
import sys
import time

import epics

prefix = sys.argv[1]


def get(suffix, as_string=False):
    # a fresh read (no monitor cache): what a client sees right after its put completed
    value = epics.caget(prefix + suffix, as_string=as_string, use_monitor=False, timeout=5)
    if value is None:
        raise SystemExit(f"no answer from {prefix + suffix}")
    return value


def put(suffix):
    # wait=True is a put with completion (ca_put_callback): it returns once the server is done
    if epics.caput(prefix + suffix, 1, wait=True, timeout=30) != 1:
        raise SystemExit(f"caput {prefix + suffix} failed")


seen = {
    "status": get("STATUS", True),
    "pid": int(get("PID")),
    "autorestart": get("AUTORESTART", True),
}
deadline = time.time() + 5
while "ready" not in (iocout := get("IOCOUT", True)) and time.time() < deadline:
    time.sleep(0.1)
seen["iocout"] = iocout
put("STOP")
seen["after_stop"] = [get("STATUS", True), get("AUTORESTART", True), int(get("PID"))]
put("START")
seen["after_start"] = [get("STATUS", True), int(get("PID"))]
put("RESTART")
seen["after_restart"] = [get("STATUS", True), int(get("PID")), get("AUTORESTART", True)]
put("TOGGLE")
seen["after_toggle"] = get("AUTORESTART", True)
before = int(get("PID"))
put("KILL")  # auto restart is OFF now: the child stays down
seen["after_kill"] = [get("STATUS", True), int(get("PID")), before]
print(json.dumps(seen))
