"""``python -m support.conformance record-2.8 PATH/TO/procServ-2.8.0`` (from tests/): record the fixtures."""

import sys

from .fixtures import record_fixtures_2_8

if len(sys.argv) != 3 or sys.argv[1] != "record-2.8":
    sys.exit("usage: (cd tests && python -m support.conformance record-2.8 PATH/TO/procServ-2.8.0)")
record_fixtures_2_8(sys.argv[2])
