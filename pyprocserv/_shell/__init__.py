"""The shell: trio and the OS around one IOC (child and pty, console fan-out, listeners, files).

It applies the core's decisions to real file descriptors. It imports ``_core`` and never the
optional extras (``_ca``) or the programs (``_apps``); extras reach it through ``extras.Root``.
"""
