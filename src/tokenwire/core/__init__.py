"""The core: what a run is asked (:mod:`~tokenwire.core.request`), what it answers
(:mod:`~tokenwire.core.response`), its limits, the provider protocol, and the sans-I/O rules of one
stream (:mod:`~tokenwire.core.lifecycle`); owned background tasks (:mod:`~tokenwire.core.tasks`).
Beside :mod:`tokenwire.events` and :mod:`tokenwire.errors`, the bottom layer: it imports no log,
consumer, engine, provider or tool.
"""
