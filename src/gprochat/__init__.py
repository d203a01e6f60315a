"""gprochat: the GPROChat (GeminiProChat) provider, a compatible server, and friends.

>>> from gprochat import GPROChat
>>> for chunk in GPROChat.create_completion("", [{"role": "user", "content": "Hi"}]):
...     print(chunk, end="")
"""

__version__ = "0.1.0"

from .client import AsyncClient, Client
from .errors import (
    AllDeploymentsFailedError,
    APIStatusError,
    AuthenticationError,
    BackendError,
    BadRequestError,
    ConfigurationError,
    ConnectError,
    GPROChatError,
    ImageError,
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
    SharedStateError,
    TimeoutError,
    TransportError,
    UnsupportedParameterError,
)
from .images import Image, load_image
from .providers import (
    AsyncGeneratorProvider,
    BaseProvider,
    Deployment,
    GPROChat,
    ProviderModelMixin,
    Timeout,
    format_prompt,
)
from .typing import AsyncResult, CreateResult, Messages

__all__ = [
    "__version__",
    "GPROChat",
    "Deployment",
    "Client",
    "Image",
    "load_image",
    "AsyncClient",
    "AsyncGeneratorProvider",
    "BaseProvider",
    "ProviderModelMixin",
    "format_prompt",
    "Timeout",
    "Messages",
    "AsyncResult",
    "CreateResult",
    "GPROChatError",
    "ModelNotSupportedError",
    "ConfigurationError",
    "ProtocolError",
    "ImageError",
    "InvalidParameterError",
    "UnsupportedParameterError",
    "TransportError",
    "ConnectError",
    "ProxyError",
    "TimeoutError",
    "IncompleteResponseError",
    "AllDeploymentsFailedError",
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
    "SharedStateError",
]
