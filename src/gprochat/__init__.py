"""gprochat: the GPROChat (GeminiProChat) provider, a compatible server, and friends.

>>> from gprochat import GPROChat
>>> for chunk in GPROChat.create_completion("", [{"role": "user", "content": "Hi"}]):
...     print(chunk, end="")
"""

__version__ = "0.1.0"

from .client import AsyncClient, Client  # noqa: E402
from .errors import (  # noqa: E402
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BackendError,
    ConnectError,
    GPROChatError,
    IncompleteResponseError,
    InvalidParameterError,
    InvalidPasswordError,
    InvalidSignatureError,
    ModelNotSupportedError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    ProxyError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TimeoutError,
    TransportError,
    UnsupportedParameterError,
)
from .providers import (  # noqa: E402
    AsyncGeneratorProvider,
    BaseProvider,
    GPROChat,
    ProviderModelMixin,
    format_prompt,
)
from .typing import AsyncResult, CreateResult, Messages  # noqa: E402

__all__ = [
    "__version__",
    "GPROChat",
    "Client",
    "AsyncClient",
    "AsyncGeneratorProvider",
    "BaseProvider",
    "ProviderModelMixin",
    "format_prompt",
    "Messages",
    "AsyncResult",
    "CreateResult",
    "GPROChatError",
    "ModelNotSupportedError",
    "ProtocolError",
    "InvalidParameterError",
    "UnsupportedParameterError",
    "TransportError",
    "ConnectError",
    "ProxyError",
    "TimeoutError",
    "IncompleteResponseError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "InvalidPasswordError",
    "InvalidSignatureError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "BackendError",
]
