"""The OpenAI-compatible gateway: ``/v1/models`` and ``/v1/chat/completions``.

Point any OpenAI client at ``http://HOST:PORT/v1``. Answers come from the server's
one backend, as on ``/api/generate`` (with ``--relay-url``, that backend is a
``RelayBackend``: another GeminiProChat deployment).

Requests pass the same guard as ``/api/generate`` (``guard.RequestGuard``): size,
the gateway's own rate budget, an API key or the site password as a bearer token
when the site has either, the conversation limits, a stream slot.

Modules, each importing only those above it:

- ``errors``: a body pydantic refused, as OpenAI's 400 (``refusals.Refusal``);
- ``fetch``: ``ImageFetcher``, remote image URLs fetched safely (``--fetch-image-urls``);
- ``images``: a request's image parts, refused where they cannot be, checked, fetched;
- ``conversation``: a request as the backend's ``Conversation``, and its model's name;
- ``models``: ``GET /v1/models`` and ``GET /v1/models/{id}``;
- ``chat``: ``POST /v1/chat/completions``, whole or streamed;
- ``routes``: ``gateway_routes()`` for the app's router, and the open-gateway warning;
- ``openapi``: ``openapi_schema()``, the routes' OpenAPI document.
"""

from .openapi import openapi_schema
from .routes import gateway_routes, gateway_warning

__all__ = ["gateway_routes", "gateway_warning", "openapi_schema"]
