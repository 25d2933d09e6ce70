"""tokenwire over gRPC: the schema and codec, the service on grpc.aio read by real gRPC clients."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.events import Done, Error, Event, Start, Step, TextDelta, ToolCall, ToolResult, Usage
from tokenwire.grpc import tokenwire_pb2 as pb
from tokenwire.grpc.codec import PROTO, from_proto, session_frame
from tokenwire.testing import golden

SRC = Path(__file__).resolve().parent.parent / "src"


def test_the_generated_modules_are_current(tmp_path: Path) -> None:
    """What `make proto` writes from tokenwire.proto is what is committed."""
    shutil.copytree(SRC / "tokenwire" / "grpc", tmp_path / "tokenwire" / "grpc")
    for generated in (tmp_path / "tokenwire" / "grpc").glob("tokenwire_pb2*"):
        generated.unlink()
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", "--grpc_python_out=."]
    subprocess.run([*cmd, "tokenwire/grpc/tokenwire.proto"], cwd=tmp_path, check=True)
    for name in ("tokenwire_pb2.py", "tokenwire_pb2.pyi", "tokenwire_pb2_grpc.py"):
        fresh = (tmp_path / "tokenwire" / "grpc" / name).read_text()
        assert fresh == (SRC / "tokenwire" / "grpc" / name).read_text(), f"{name} is stale: run `make proto`"


def round_trip(event: Event) -> Event:
    return from_proto(pb.Event.FromString(PROTO.encode(event)))


def test_every_golden_event_round_trips_and_rides_in_a_session_reply() -> None:
    for event in golden.transcript():
        assert round_trip(event) == event
        reply = pb.SessionReply.FromString(session_frame(PROTO.encode(event)))
        assert reply.WhichOneof("reply") == "event" and from_proto(reply.event) == event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
envelope = {"stream_id": st.text(max_size=8), "seq": st.integers(0, 2**40), "ts": st.floats(0, 2e9)}
events = st.one_of(
    st.builds(TextDelta, st.text(), **envelope),
    st.builds(Start, model=st.text(), meta=st.dictionaries(st.text(max_size=5), json_values), **envelope),
    st.builds(ToolCall, call_id=st.text(), name=st.text(), args=st.dictionaries(st.text(), json_values), **envelope),
    st.builds(ToolResult, call_id=st.text(), name=st.text(), result=json_values, is_error=st.booleans(), **envelope),
    st.builds(Step, name=st.text(), status=st.sampled_from(["started", "finished"]), detail=json_values, **envelope),
    st.builds(Usage, input_tokens=st.integers(0, 2**40), output_tokens=st.integers(0, 2**40), **envelope),
    st.builds(
        Done, finish_reason=st.sampled_from(["stop", "length", "cancelled"]), reason=st.none() | st.text(), **envelope
    ),
    st.builds(Error, code=st.text(), message=st.text(), retryable=st.booleans(), **envelope),
)


@settings(max_examples=400, deadline=None)
@given(event=events)
def test_any_event_round_trips_exactly(event: Any) -> None:
    """JSON values stay exact (integers stay integers): they ride as JSON text, not Struct."""
    assert round_trip(event) == event
