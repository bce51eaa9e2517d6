"""The optional Channel Access extra (``pip install pyprocserv[pv]``): PVs, the watchdog's monitor.

Imported only when asked for (``--pv-prefix``, ``--watch-pv``, host mode's PVs); it sees the
server only through ``_shell.extras.Root`` and runs under its ``Supervisor``.
"""
