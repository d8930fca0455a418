"""The dashboard's web server: ``streamlit run dashboard/serve.py`` (Procfile, scripts/run).

Streamlit serves ``app.py`` exactly as ``streamlit run dashboard/app.py`` would, through its ASGI
entry point ``st.App``, with one middleware in front of all of Streamlit's own: the endpoints in
:data:`CLOSED_ENDPOINTS` answer 404 to every method. Streamlit has no setting that turns them off,
and they answer without sign-in: ``/_stcore/metrics`` tells anyone who asks how many sessions are
open, how long they lasted and which cached queries hold how much memory.

What stays open without sign-in, and why that is harmless, is in docs/security.md ("Endpoints").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import streamlit as st
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dashboard import data, warm_up

# Path endings (after any server.baseUrlPath), compared without case.
CLOSED_ENDPOINTS: frozenset[tuple[str, ...]] = frozenset({("_stcore", "metrics")})


def closed(path: str) -> bool:
    """Whether a request's (percent-decoded) path names a closed endpoint, under any base path,
    with repeated or trailing slashes."""
    parts = tuple(part.lower() for part in path.split("/") if part)
    return any(parts[-len(ending) :] == ending for ending in CLOSED_ENDPOINTS)


class ClosedEndpoints:
    """ASGI middleware: 404 for the paths :func:`closed` names, before Streamlit sees them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and closed(scope["path"]):
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@asynccontextmanager
async def lifespan(app: st.App) -> AsyncIterator[None]:
    """The server's life: the cohort page's caches warmed from the start (dashboard/warm_up.py)."""
    warm_up.start(data.current_lake())
    yield


app = st.App("app.py", lifespan=lifespan, middleware=[Middleware(ClosedEndpoints)])
