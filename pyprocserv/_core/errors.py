"""The one base of every error pyprocserv raises on purpose (h11's manner: catch one class).

Each error keeps the standard base its callers already catch (``OSError`` for a socket that
cannot be bound, ``ValueError`` for a spec or a command line that cannot be read), so code
that catches those goes on working; code that wants pyprocserv's errors only catches
:class:`PyprocservError`.
"""

from __future__ import annotations


class PyprocservError(Exception):
    """Base of pyprocserv's own errors; ``str()`` is the message for the user."""
