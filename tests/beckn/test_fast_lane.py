"""The Beckn fast lane (beckn/pipeline.py FastLane): POSTs to a participant's Beckn paths reach its pipeline
without FastAPI's routing; every other request still reaches the FastAPI app, lifespan included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from beckn.pipeline import FastLane


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
    served = {"on_search", "on_confirm"}

    def route(path: str) -> tuple[str, str] | None:
        action = path.removeprefix("/beckn/")
        return (action, "me") if action != path and action in served else None

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
