"""Providers: the g4f-shaped framework and the GPROChat provider."""

from ._timeouts import Timeout
from .base import AsyncGeneratorProvider, BaseProvider, ProviderModelMixin
from .gprochat import GPROChat
from .helper import format_prompt

__all__ = [
    "AsyncGeneratorProvider",
    "BaseProvider",
    "ProviderModelMixin",
    "GPROChat",
    "Timeout",
    "format_prompt",
]
