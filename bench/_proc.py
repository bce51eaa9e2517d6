"""Kept only for compare.py and soak.py until they import tests/support directly; then delete."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.proc import children_of, cpu_ticks, fd_count, proc_state, rss_kib, status_kib  # noqa: E402

__all__ = ["children_of", "cpu_ticks", "fd_count", "proc_state", "rss_kib", "status_kib"]
