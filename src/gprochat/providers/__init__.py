"""Providers: the g4f-shaped framework and the GPROChat provider."""

from ._deployments import Deployment, load_deployments, parse_deployment
from ._failover import AnsweredBy, DeploymentRegistry, registry
from ._timeouts import Timeout
from .base import AsyncGeneratorProvider, BaseProvider, ProviderModelMixin
from .gprochat import GPROChat
from .helper import format_prompt

__all__ = [
    "AnsweredBy",
    "Deployment",
    "DeploymentRegistry",
    "load_deployments",
    "parse_deployment",
    "registry",
    "AsyncGeneratorProvider",
    "BaseProvider",
    "ProviderModelMixin",
    "GPROChat",
    "Timeout",
    "format_prompt",
]
