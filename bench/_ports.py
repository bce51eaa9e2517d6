"""Kept only for compare.py and soak.py until they import tests/support directly; then delete."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from support.ports import free_port  # noqa: E402

__all__ = ["free_port"]
