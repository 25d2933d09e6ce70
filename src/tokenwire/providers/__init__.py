"""Model backends. Each module only maps a backend's native stream to tokenwire events.

See :mod:`tokenwire.providers.base` for the protocol.
"""

from tokenwire.providers.base import Part, Provider
from tokenwire.providers.batch import Batch
from tokenwire.providers.llama import LlamaCpp
from tokenwire.providers.replay import Replay
from tokenwire.providers.scripted import Delay, Scripted, Stall

__all__ = ["Batch", "Delay", "LlamaCpp", "Part", "Provider", "Replay", "Scripted", "Stall"]
