"""JSON errors with a stable code, a human message and the field at fault."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
    details: list[ErrorDetail] = []


class ApiError(Exception):
    """Raise from a route: becomes {"error": {"code", "message", "field"}}."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

_PYDANTIC_CODES = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "string_too_long": "too_long",
    "greater_than": "too_small",
    "greater_than_equal": "too_small",
    "less_than": "too_large",
    "less_than_equal": "too_large",
    "json_invalid": "malformed_json",
    "reserved_key": "reserved_key",
}


def _field(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _body(status: int, details: list[ErrorDetail]) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content=ErrorBody(error=details[0], details=details).model_dump(mode="json"),
    )


_SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


def database_error_kind(exc: DBAPIError) -> str:
    """What a database error says about the request: "unstorable" (a value no column of
    its kind holds: SQLSTATE class 22, or SQLAlchemy's DataError), "conflict" (a unique
    key taken meanwhile: 23505, or SQLite's unique and primary-key constraints), "bug"
    (any other integrity constraint), else "unavailable". asyncpg's class-22 errors reach
    SQLAlchemy as a plain DBAPIError, so the SQLSTATE decides where there is one."""
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and state:
        if state.startswith("22"):
            return "unstorable"
        if state == "23505":
            return "conflict"
        if state.startswith("23"):
            return "bug"
        return "unavailable"
    if isinstance(exc, DataError):
        return "unstorable"
    if isinstance(exc, IntegrityError):
        name = getattr(exc.orig, "sqlite_errorname", None)
        return "conflict" if name in _SQLITE_UNIQUE else "bug"
    return "unavailable"


_DRIVERS = ("sqlite3", "aiosqlite", "asyncpg", "sqlalchemy", "jejaring_shared.sqlite_driver")


def _raised_by_a_driver(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc`'s traceback is a database driver's."""
    tb = exc.__traceback__
    module = ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return module in _DRIVERS or module.split(".")[0] in _DRIVERS


def _internal() -> JSONResponse:
    return _body(500, [ErrorDetail(code="internal_error", message="internal error")])


def _unstorable() -> JSONResponse:
    return _body(
        422,
        [
            ErrorDetail(
                code="unstorable_value",
                message="a value of the request is out of what the database can store",
            )
        ],
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return _body(exc.status, [ErrorDetail(code=exc.code, message=exc.message, field=exc.field)])

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            ErrorDetail(
                code=_PYDANTIC_CODES.get(str(err.get("type")), "invalid"),
                message=str(err.get("msg")),
                field=_field(err.get("loc", ())),
            )
            for err in exc.errors()
        ] or [ErrorDetail(code="invalid", message="invalid request")]
        return _body(422, details)

    @app.exception_handler(OverflowError)
    async def _overflow(_req: Request, exc: OverflowError) -> JSONResponse:
        # A database driver refusing a value (SQLite's an integer past 64 bits): the
        # request's, which its own checks let through. Raised by our own code, a bug.
        if _raised_by_a_driver(exc):
            log.warning("value out of range for the database: %s", exc)
            return _unstorable()
        log.exception("unhandled error", exc_info=exc)
        return _internal()

    @app.exception_handler(DBAPIError)
    async def _database(_req: Request, exc: DBAPIError) -> JSONResponse:
        kind = database_error_kind(exc)
        if kind == "unstorable":
            # The database refused a value the request carried (a number past its
            # column, a NUL in text): the request's fault, not an outage, and the
            # transaction rolled back. A 503 would have clients retry it for ever.
            log.warning("database refused a value: %s", exc)
            return _unstorable()
        if kind == "conflict":
            # A unique key taken by a change committed at the same time, past the checks
            # the route made before writing (routes that expect the race say so
            # themselves): nothing was written, and a retry sees the first.
            log.warning("unique key taken meanwhile: %s", exc)
            return _body(
                409,
                [
                    ErrorDetail(
                        code="conflict",
                        message="a change made at the same time took this one's key; "
                        "nothing was written: send it again",
                    )
                ],
            )
        if kind == "bug":
            # Another constraint (NOT NULL, CHECK, a foreign key): the code let a wrong
            # row through. Not the database's outage, nor anything a retry fixes.
            log.error("constraint violated", exc_info=exc)
            return _internal()
        log.warning("database error: %s", exc)
        return _body(
            503,
            [ErrorDetail(code="database_unavailable", message="the database is not available")],
        )

    @app.exception_handler(ConnectionError)
    async def _unreachable(_req: Request, exc: ConnectionError) -> JSONResponse:
        # Connecting to a database that is down: asyncpg raises the socket's own error
        # (ConnectionRefusedError), which SQLAlchemy does not wrap in a DBAPIError. Only
        # connection errors: a missing file or a permission is a bug, a 500.
        log.warning("database unreachable: %r", exc, exc_info=exc)
        return _body(
            503,
            [ErrorDetail(code="database_unavailable", message="the database is not available")],
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _internal()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _body(exc.status_code, [ErrorDetail(code=code, message=str(exc.detail))])
