"""Errors the services raise for the API to render in the Matrix error format.

Services sit below the HTTP layer and must not import it, yet most of their
refusals are exactly a Matrix error (status, errcode, message): this carries one.
"""

from __future__ import annotations

from typing import Any

from homeserver.storage.core.pool import is_unavailable


class ServiceError(Exception):
    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra


def not_found(message: str = "Not found") -> ServiceError:
    return ServiceError(404, "M_NOT_FOUND", message)


def forbidden(message: str) -> ServiceError:
    return ServiceError(403, "M_FORBIDDEN", message)


def bad_json(message: str) -> ServiceError:
    return ServiceError(400, "M_BAD_JSON", message)


def invalid_param(message: str) -> ServiceError:
    return ServiceError(400, "M_INVALID_PARAM", message)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is away for now (a restart, a failover): the
    API answers 503 and the client tries again."""
    return is_unavailable(exc)
