"""Log format and level: one line per record, to stderr; as text, or (`log_format:
json`) one JSON object per line for log collectors (Loki, Elasticsearch, journald's
JSON tools), with the id of the request the record was logged for."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")

# The request being handled (Synapse's `GET-42` style), set by the HTTP layer; records
# logged while handling it carry it, in whichever task they are logged.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, message, and
    request_id / exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # alembic logs every migration step at INFO; keep it to warnings unless debugging.
    if level.lower() != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
