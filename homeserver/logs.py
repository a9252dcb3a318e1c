"""Log format and level: one line per record, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # alembic logs every migration step at INFO; keep it to warnings unless debugging.
    if level.lower() != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
