"""The support layer that tests/ and bench/ share: one client, one launcher, one /proc reader,
one port picker.

* ``client``: the console client (records every byte, waits for patterns) and ``OFFER``;
* ``launch``: pyprocserv as a real process (``ServerProcess``) or in-process, short tmpdirs;
* ``fakes``: a child without a process and its spawner, for the fake-server tests;
* ``proc``: what /proc says about a process (state, children, fds, memory, CPU, listeners);
* ``ports``: free ports that no other call in this process has handed out;
* ``conformance``: the harness that runs procServ and pyprocserv side by side.
* ``browser``: headless Chromium over the DevTools protocol (pages, keys, JavaScript, screenshots).
* ``webclient``: a browser of raw HTTP and WebSockets for the web console (cookies, CSRF, Origin).

Rules for the tests that use them (trio-websocket style):
* Use localhost only; servers take port 0 and tests read the port back.
* Tests with fakes run on ``autojump_clock``; tests with real processes or sockets never do.
* Every real test has an absolute timeout (``trio.fail_after``) and waits for bytes, not sleeps.

bench/ scripts run as ``python bench/x.py`` and put tests/ on ``sys.path`` to import this package.
"""
