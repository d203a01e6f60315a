"""The OpenAI-style client: ``Client`` / ``AsyncClient`` and openai-python-shaped objects.

>>> from gprochat import Client
>>> client = Client(base_url="http://127.0.0.1:8000")
>>> for chunk in client.chat.completions.create(
...     model="", messages=[{"role": "user", "content": "Hi"}], stream=True
... ):
...     print(chunk.choices[0].delta.content or "", end="")
"""

from ..openai.types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
    Model,
    SyncPage,
)
from ._client import AsyncClient, AsyncStream, Client, Stream

__all__ = [
    "Client",
    "AsyncClient",
    "Stream",
    "AsyncStream",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "CompletionUsage",
    "Model",
    "SyncPage",
]
