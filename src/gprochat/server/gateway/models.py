"""``GET /v1/models`` and ``GET /v1/models/{id}``: the names the gateway answers to."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...openai.types import Model, SyncPage
from ..guard import RequestGuard
from .upstream import upstream_for

__all__ = ["list_models", "retrieve_model"]


def _model(name: str) -> Model:
    return Model(id=name, created=0, owned_by="gprochat")


async def _admit(request: Request) -> None:
    guard: RequestGuard = request.app.state.guard
    await guard.admit(request, "gateway", bearer=True)


async def list_models(request: Request) -> Response:
    await _admit(request)
    page = SyncPage[Model](data=[_model(name) for name in upstream_for(request).models()])
    return JSONResponse(page.model_dump(mode="json"))


async def retrieve_model(request: Request) -> Response:
    await _admit(request)
    model = _model(upstream_for(request).resolve(request.path_params["model_id"]))
    return JSONResponse(model.model_dump(mode="json"))
