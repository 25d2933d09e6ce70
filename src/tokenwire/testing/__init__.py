"""Testing kit: transcripts, transcript-style assertions and pytest fixtures.

>>> from tokenwire.testing import Transcript, assert_transcript
"""

from tokenwire.testing.assertions import assert_transcript, render
from tokenwire.testing.transcript import Transcript

__all__ = ["Transcript", "assert_transcript", "render"]
