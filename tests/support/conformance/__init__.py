"""Conformance harness: run the same scenario against procServ and pyprocserv.

A scenario starts a server (``harness.ServerUnderTest``), drives raw socket clients
(``support.client.Client``) and returns ``{name: normalised transcript bytes}``.  A test then
asserts that the dicts for the real procServ 2.7.0 and for pyprocserv are equal byte for byte::

    ref = await scenario_kill_restart(["/usr/bin/procServ"])
    new = await scenario_kill_restart([sys.executable, "-m", "pyprocserv"])
    assert comparable(ref) == comparable(new)

The modules: ``harness`` (launching either server side by side, leak checks), ``normalise``
(tokens for what differs run to run), the scenarios grouped by what they check (``greeting``,
``restart``, ``keys``, ``logfile``, ``cli``), ``scenarios`` (all of them by name) and
``fixtures`` (procServ 2.8.0's transcripts; record them with
``cd tests && python -m support.conformance record-2.8 PATH/TO/procServ-2.8.0``).

Rules the scenarios follow (so that the transcripts are stable run to run):

* Transcripts hold every byte a client received, raw (IAC bytes, ``\\r\\n``,
  NULs).  ``normalise`` only replaces pids, ``%c`` dates, the temporary
  directory, the chosen ports, argv[0] and the version in the Welcome line.
* Clients that need a running child connect only after the child runs
  (``connect_when_running``), because procServ starts its first child about
  0.5 s after launch.
* An expected event is awaited by its bytes (``expect``), then the client
  reads until the line has been quiet for a short while, so that unexpected
  extra bytes from the server under test end up in the transcript.
* procServ's child-exit messages come in two groups whose order is racy
  (behaviour §2.2).  ``canonical_exit_order`` puts them in one order.
* Keys starting with ``_`` are informational (raw timings): ``comparable``
  drops them.
"""

from .fixtures import read_fixtures_2_8, record_fixtures_2_8
from .harness import PROCSERV, ServerCommand, ServerUnderTest
from .normalise import NormContext, canonical_exit_order, comparable, diff_transcripts, normalise
from .scenarios import SCENARIOS, SCENARIOS_2_8, run_scenario

__all__ = [
    "PROCSERV", "SCENARIOS", "SCENARIOS_2_8", "NormContext", "ServerCommand", "ServerUnderTest",
    "canonical_exit_order", "comparable", "diff_transcripts", "normalise", "read_fixtures_2_8",
    "record_fixtures_2_8", "run_scenario",
]
