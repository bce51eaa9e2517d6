"""Read record fields and alarms with pyepics on libca, as IBEX's genie_python and alarm tools do.

Usage: pyepics_fields.py NAME... Prints one JSON object: for each NAME its value as a string,
its native value, severity and status, and how long the channel took to connect (genie_python
gives ``NAME.DISP`` 0.1 s before each put). The CA environment comes from the caller.
"""

import json
import sys
import time

import epics

seen = {}
for name in sys.argv[1:]:
    pv = epics.PV(name, auto_monitor=False)
    start = time.monotonic()
    connected = pv.wait_for_connection(timeout=5)
    took = time.monotonic() - start
    if not connected:
        seen[name] = None
        continue
    native = pv.get(use_monitor=False, timeout=5)
    text = pv.get(as_string=True, use_monitor=False, timeout=5)
    pv.get_ctrlvars(timeout=5)
    seen[name] = {"text": text, "native": native if isinstance(native, (int, str)) else native.tolist(),
                  "severity": pv.severity, "status": pv.status, "connect": took}
    pv.disconnect()
print(json.dumps(seen))
