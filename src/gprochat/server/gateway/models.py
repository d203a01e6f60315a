"""``GET /v1/models`` and ``GET /v1/models/{id}``: the names the gateway answers to.

Each model is ``{"id", "object": "model", "created", "owned_by": "gprochat"}``, as
OpenAI lists its own; ``created`` is when the server started (the app was built).
"""

from __future__ import annotations

import time
from typing import Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...openai.types import Model, SyncPage
from ..backends import Backend
from ..guard import RequestGuard
from ..refusals import Refusal
from .conversation import resolve_model

__all__ = ["ModelRoutes"]


class ModelRoutes:
    """The two handlers, sharing the server's start time as every model's ``created``."""

    def __init__(self, created: Optional[int] = None) -> None:
        self.created = int(time.time()) if created is None else created

    def model(self, name: str) -> Model:
        return Model(id=name, object="model", created=self.created, owned_by="gprochat")

    async def list_models(self, request: Request) -> Response:
        await _admit(request)
        page = SyncPage[Model](
            object="list", data=[self.model(name) for name in _backend(request).models()]
        )
        return JSONResponse(page.model_dump(mode="json", exclude_unset=True))

    async def retrieve_model(self, request: Request) -> Response:
        await _admit(request)
        model_id = request.path_params["model_id"]
        if not model_id:
            # "" stands for the default in a completion's "model", not in a URL:
            # GET /v1/models/ names no model, so it is no model's page.
            raise Refusal(
                404,
                "GET /v1/models/ names no model; GET /v1/models lists them, "
                "GET /v1/models/{id} describes one",
                code="model_not_found",
            )
        model = self.model(resolve_model(_backend(request), model_id))
        return JSONResponse(model.model_dump(mode="json", exclude_unset=True))


async def _admit(request: Request) -> None:
    guard: RequestGuard = request.app.state.guard
    await guard.admit(request, "gateway", bearer=True)


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend
