"""A small HTTP client for the BAP's aggregator API (/api/v1), used by `flexmarket demo`, the
end-to-end tests and the benchmarks — and an example of how an aggregator talks to the BAP.

Every call presents an API key (`flexmarket bap apikey create`, or the manifest `flexmarket up` writes:
participants.bap.api_keys) as `Authorization: Bearer fmb_…`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx


class BapApiError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"BAP API answered {status}: {body}")
        self.status = status
        self.body = body


class BapClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        if r.status_code >= 400:
            raise BapApiError(r.status_code, r.json() if r.content else None)
        return r.json()

    def search(self, window_start: datetime, window_end: datetime, power_kw: float, **kw: Any) -> dict[str, Any]:
        return self._post(
            "/search",
            {
                "window_start": window_start.isoformat(),
                "window_end": window_end.isoformat(),
                "power_kw": power_kw,
                **kw,
            },
        )

    def order(self, action: str, transaction_id: str, bpp_id: str, provider_id: str, **kw: Any) -> dict[str, Any]:
        body = {"transaction_id": transaction_id, "bpp_id": bpp_id, "provider_id": provider_id}
        body.update({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in kw.items() if v is not None})
        return self._post(f"/{action}", body)

    def order_choice(
        self, action: str, transaction_id: str, choice: dict[str, Any], window_start: datetime, window_end: datetime
    ) -> dict[str, Any]:
        """`action` on one of `/plan`'s choices (its BPP, provider, item and kW) for the given window."""
        return self.order(
            action,
            transaction_id,
            choice["bpp_id"],
            choice["provider_id"],
            item_id=choice["item_id"],
            power_kw=choice["power_kw"],
            window_start=window_start,
            window_end=window_end,
        )

    def plan(
        self,
        transaction_id: str,
        target_kw: float,
        objective: str = "cost",
        window_start: datetime | None = None,
        window_end: datetime | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"transaction_id": transaction_id, "target_kw": target_kw, "objective": objective}
        if window_start and window_end:
            body.update(window_start=window_start.isoformat(), window_end=window_end.isoformat())
        return self._post("/plan", body)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        r = self.http.get(path, params={k: v for k, v in (params or {}).items() if v is not None})
        if r.status_code >= 400:
            raise BapApiError(r.status_code, r.json() if r.content else None)
        return r.json()

    def transaction(self, transaction_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._get(f"/transactions/{transaction_id}")
        return view

    def failures(self, transaction_id: str | None = None) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._get("/failures", {"transaction_id": transaction_id})
        return listed

    def audit(self, **filters: Any) -> dict[str, Any]:
        """GET /audit (operator keys): key_id, outcome, since, until, before_id, limit."""
        page: dict[str, Any] = self._get("/audit", filters)
        return page

    def wait(
        self, transaction_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 15.0, interval: float = 0.02
    ) -> dict[str, Any]:
        """Poll the transaction until `done(view)`; raise TimeoutError with the last view otherwise."""
        deadline = time.monotonic() + timeout
        view = self.transaction(transaction_id)
        while not done(view):
            if time.monotonic() > deadline:
                raise TimeoutError(f"transaction {transaction_id} did not get there in {timeout:g} s: {view}")
            time.sleep(interval)
            view = self.transaction(transaction_id)
        return view


def order_of(view: dict[str, Any], provider_id: str) -> dict[str, Any] | None:
    return next((o for o in view["orders"] if o["provider_id"] == provider_id), None)


def order_in(provider_id: str, *states: str) -> Callable[[dict[str, Any]], bool]:
    def done(view: dict[str, Any]) -> bool:
        o = order_of(view, provider_id)
        return o is not None and (o["state"] in states or bool(o["last_error"]))

    return done
