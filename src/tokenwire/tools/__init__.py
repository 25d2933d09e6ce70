"""Tools: typed functions the model may call, validated and executed under bounds.

>>> import tokenwire
>>> @tokenwire.tool
... def get_time(zone: str = "UTC") -> str:
...     '''The current time in a time zone.'''
...     return "12:00"
>>> get_time.spec.name, sorted(get_time.spec.parameters["properties"])
('get_time', ['zone'])
"""

from tokenwire.tools.agent import Agent
from tokenwire.tools.definition import Progress, Tool, ToolArgumentsInvalid, Toolset, tool
from tokenwire.tools.options import Approver, ToolOptions
from tokenwire.tools.runner import ToolRunner

__all__ = [
    "Agent",
    "Approver",
    "Progress",
    "Tool",
    "ToolArgumentsInvalid",
    "ToolOptions",
    "ToolRunner",
    "Toolset",
    "tool",
]
