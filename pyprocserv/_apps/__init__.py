"""The programs: ``pyprocserv``, ``pyprocserv-manage``, host mode, the launcher and systemd units.

The only layer that knows every other one: it turns command lines and configuration files into
servers, wires the extras to them, and turns errors into messages and exit codes.
"""
