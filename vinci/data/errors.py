"""`BadRowError`: one row (or a whole source) that cannot be used, with where and why.

Every reader in `vinci.data` raises it, so a caller can skip-and-count by ``reason`` (a short
category such as "corrupt image") and a person reading the message sees file, row and field.
"""

from __future__ import annotations

from typing import Optional


class BadRowError(ValueError):
    """A row (or a whole file, when ``row`` is None) that cannot be used, with where and why."""

    def __init__(self, file: str, row: Optional[int], field: Optional[str], reason: str, detail: str):
        where = file if row is None else f"{file}: row {row}"
        where += f": field '{field}'" if field else ""
        super().__init__(f"{where}: {reason}: {detail}")
        self.file, self.row, self.field, self.reason, self.detail = file, row, field, reason, detail
