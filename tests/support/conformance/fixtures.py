"""procServ 2.8.0's transcripts, kept as fixtures (CI has no 2.8.0 to run)."""

from __future__ import annotations

import os
import shutil

import trio

from .normalise import comparable
from .scenarios import SCENARIOS_2_8


TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES_2_8 = os.path.join(TESTS, "fixtures", "procserv-2.8.0")


def read_fixtures_2_8(scenario: str) -> dict[str, bytes]:
    directory = os.path.join(FIXTURES_2_8, scenario)
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def record_fixtures_2_8(procserv: str) -> None:
    """Run every 2.8 scenario on PROCSERV (a procServ 2.8.0) and write its transcripts."""
    for scenario, run in SCENARIOS_2_8.items():
        transcripts = comparable(trio.run(run, [procserv]))
        directory = os.path.join(FIXTURES_2_8, scenario)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        for name, data in transcripts.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        print(f"{scenario}: {', '.join(sorted(transcripts))}")
