"""Model backends. Each module only maps a backend's native stream to tokenwire events.

See :mod:`tokenwire.core.provider` for the protocol every backend implements.
"""

from tokenwire.core.provider import Part, Provider
from tokenwire.providers.anthropic import Anthropic
from tokenwire.providers.batch import Batch
from tokenwire.providers.http import RetryPolicy
from tokenwire.providers.llama import LlamaCpp
from tokenwire.providers.openai_chat import OpenAIChat, OpenAICompatible
from tokenwire.providers.openai_responses import OpenAIResponses
from tokenwire.providers.replay import Replay
from tokenwire.providers.scripted import Delay, Scripted, Stall

__all__ = [
    "Anthropic",
    "Batch",
    "Delay",
    "LlamaCpp",
    "OpenAIChat",
    "OpenAICompatible",
    "OpenAIResponses",
    "Part",
    "Provider",
    "Replay",
    "RetryPolicy",
    "Scripted",
    "Stall",
]
