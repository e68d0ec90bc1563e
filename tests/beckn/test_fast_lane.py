"""The Beckn fast lane (beckn/pipeline.py FastLane): POSTs to a participant's Beckn paths reach its pipeline
without FastAPI's routing; every other request still reaches the FastAPI app, lifespan included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from beckn.errors import Role
from beckn.pipeline import BecknPipeline, FastLane, prefixed_route
from schemas.limits import MAX_BODY_BYTES


class StubPipeline:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []

    async def handle(self, request: Request, action: str, receiver: Any) -> JSONResponse:
        body = await request.body()
        self.calls.append((action, receiver, body.decode()))
        assert request.app is app  # request.app is the participant's app, as in a FastAPI route
        return JSONResponse({"via": "lane", "action": action})


started: list[bool] = []


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    started.append(True)
    yield


app = FastAPI(lifespan=lifespan)


@app.post("/beckn/{action}")
def routed(action: str) -> JSONResponse:
    return JSONResponse({"via": "fastapi", "action": action}, status_code=404)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


def test_beckn_posts_take_the_lane_and_the_rest_reaches_the_app() -> None:
    app.state.pipeline = pipeline = StubPipeline()
    route = prefixed_route("/beckn/", "me", {"on_search", "on_confirm"})  # type: ignore[arg-type]

    with TestClient(FastLane(app, route)) as client:
        assert started  # lifespan events pass through to the app
        r = client.post("/beckn/on_search", content=b'{"context": {}}')
        assert r.json() == {"via": "lane", "action": "on_search"}
        assert pipeline.calls == [("on_search", "me", '{"context": {}}')]
        # not a served action: the FastAPI route answers (here its 404)
        r = client.post("/beckn/on_nothing", content=b"{}")
        assert (r.status_code, r.json()["via"]) == (404, "fastapi")
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/beckn/on_search").status_code == 405  # only POSTs take the lane
        assert len(pipeline.calls) == 1


def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    real = FastAPI()
    real.state.pipeline = BecknPipeline(
        participant="bap",
        role=Role.BAP,
        schema="bap",
        handlers={"on_search": lambda *a: None},  # type: ignore[arg-type,return-value]
        registry=None,
    )  # type: ignore[arg-type]  # refused before any lookup
    lane = FastLane(real, lambda path: ("on_search", "me") if path == "/beckn/on_search" else None)
    with TestClient(lane) as client:
        r = client.post("/beckn/on_search", content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        assert r.status_code == 413
        body = r.json()
        assert body["message"]["ack"]["status"] == "NACK" and "exceeds" in body["error"]["message"]
        # without a Content-Length (chunked), the stream is cut off at the limit just the same
        r = client.post("/beckn/on_search", content=iter([b"{", b" " * MAX_BODY_BYTES, b"}"]))
        assert r.status_code == 413
