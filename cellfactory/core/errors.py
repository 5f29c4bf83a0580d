"""Domain errors. Services raise them; one map turns them into a flash, an HTTP status or an exit code."""

from __future__ import annotations

from collections.abc import Callable


class DomainError(Exception):
    http_status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        # A message marked for translation (`_l`) is written out now, in the language of the request.
        message = str(message)
        super().__init__(message)
        self.message = message
        self.fields = {name: str(text) for name, text in (fields or {}).items()}
        # Work that must be kept even though the user action is rolled back (a failed
        # signature attempt that counts towards lock-out, a refused access that is audited).
        self.after_rollback: list[Callable[[], None]] = []

    def keep_after_rollback(self, action: Callable[[], None]) -> DomainError:
        self.after_rollback.append(action)
        return self


class ValidationFailed(DomainError):
    http_status = 422
    code = "invalid"


class AuthenticationFailed(DomainError):
    http_status = 401
    code = "unauthenticated"


class PermissionDenied(DomainError):
    http_status = 403
    code = "forbidden"


class NotFound(DomainError):
    http_status = 404
    code = "not_found"


class Conflict(DomainError):
    http_status = 409
    code = "conflict"
