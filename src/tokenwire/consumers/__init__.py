"""Readers of a stream's log inside the process: inline observers
(:mod:`~tokenwire.consumers.observers`), cursors with a policy — iterators and queued observers
(:mod:`~tokenwire.consumers.delivery`) —, coalescers of deltas into words and sentences
(:mod:`~tokenwire.consumers.chunking`), and speech (:mod:`~tokenwire.consumers.speech`).
"""
