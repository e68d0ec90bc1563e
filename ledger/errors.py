"""One error type for every refusal: a stable `code` for programs, a `message` for people and the HTTP
status the API answers with (4xx — bad input never becomes a 500)."""

from __future__ import annotations


class LedgerError(Exception):
    def __init__(self, code: str, message: str, *, status: int = 422, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        out.update({k: v for k, v in self.details.items() if v is not None})
        return out


def not_found(what: str) -> LedgerError:
    return LedgerError("not_found", f"{what} not found", status=404)


def forbidden(message: str) -> LedgerError:
    return LedgerError("forbidden", message, status=403)
