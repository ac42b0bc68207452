"""Dataset annotation formats as data: one small parser per format, chosen by name or detected.

Filled in below; :class:`DataSourceError` comes first because every command imports it.
"""

from __future__ import annotations


class DataSourceError(ValueError):
    """A data source cannot be used at all (missing, empty, unreadable, ambiguous).

    The message is one line naming the path and what is wrong; the CLI prints it and exits 2
    before anything is written.
    """
