"""The agent loop's public name: ``tokenwire.agent.Agent`` and ``tokenwire.agent.run``.

The loop lives with the tools (:mod:`tokenwire.tools.agent`); this module keeps the short import
path stable.

>>> from tokenwire.agent import Agent
"""

from tokenwire.tools.agent import Agent, run

__all__ = ["Agent", "run"]
