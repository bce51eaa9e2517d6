"""The pure core: procServ's rules with no I/O (stdlib only; no trio, sockets or processes).

Everything here takes its inputs (bytes, options, the time) as arguments and returns decisions,
so it is tested without a child, a socket or a clock. ``tests/test_layers.py`` keeps it so.
"""
