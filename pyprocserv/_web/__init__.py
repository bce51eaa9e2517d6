"""The optional browser console (``pip install pyprocserv[web]``): an ASGI server, contained.

Imported only when asked for. Like ``_ca`` it may use ``_core`` and ``_shell`` and nothing after
them; it sees a server only through ``_shell.extras.Root`` and runs under its ``Supervisor``.
The ASGI server is anycorn (bench/web_server_choice.py says why), always started through
:func:`.serve.serve_asgi`, which keeps whatever a client sends from ending the process.
"""
