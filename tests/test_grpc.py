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
from tokenwire.grpc.client import run_request
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


def test_every_event_type_round_trips() -> None:
    from test_events import SAMPLES

    for event in SAMPLES:
        assert round_trip(event) == event, event.type


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


# -- the service, read by real gRPC clients ---------------------------------------------------------

import asyncio  # noqa: E402
import contextlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import grpc  # noqa: E402
import pytest  # noqa: E402

from tokenwire.client import Client, GrpcClient, SyncGrpcClient  # noqa: E402
from tokenwire.errors import ClientError, Forbidden, SeqEvicted, StreamNotFound, Unauthorized  # noqa: E402
from tokenwire.grpc import tokenwire_pb2_grpc as pb_grpc  # noqa: E402
from tokenwire.log import MemoryLog  # noqa: E402
from tokenwire.providers import Scripted, Stall  # noqa: E402
from tokenwire.server import ServerConfig, create_app  # noqa: E402
from tokenwire.testing import assert_transcript  # noqa: E402
from wire import serve, wait_for  # noqa: E402

KEY = "grpc-key-123456"


@contextlib.contextmanager
def both(**config: Any) -> Iterator[tuple[str, str, Any]]:
    """The app over HTTP and gRPC: (http url, grpc target, app)."""
    providers = {
        "words": Scripted([f"w{i} " for i in range(20)], interval_s=0.002),
        "stuck": Scripted(["x", Stall()]),
        "slow": Scripted([f"s{i} " for i in range(200)], interval_s=0.001),
        "bulk": Scripted([*(f"{i:06d}" + "x" * 2000 for i in range(2000)), Stall()], interval_s=0.0002),
    }
    app = create_app(
        providers=providers,
        api_keys=[KEY],
        log=config.pop("log", None) or MemoryLog(),
        config=ServerConfig(grpc_port=0, **config),
    )
    with serve(app, lifespan="on") as url:
        yield url, f"127.0.0.1:{app.state.tokenwire.grpc.port}", app


async def test_a_run_over_grpc_is_read_over_sse_and_the_other_way_round() -> None:
    with both() as (url, target, _):
        async with GrpcClient(target, api_key=KEY) as g, Client(url, api_key=KEY) as h:
            over_grpc = [e async for e in g.run("hi", provider="words")]
            assert_transcript(over_grpc, ["start", *["text.delta"] * 20, {"type": "done", "finish_reason": "stop"}])
            info = await g.create_run("again", provider="words")
            assert [e async for e in h.subscribe(info.stream_id, info.read_token)] == [
                e async for e in g.subscribe(info.stream_id, info.read_token)
            ]
            started_over_http = await h.create_run("third", provider="words")
            read = [e async for e in g.subscribe(started_over_http.stream_id, started_over_http.read_token)]
            assert [e.seq for e in read] == list(range(22)) and read[-1].type == "done"


async def test_status_codes_map_our_errors() -> None:
    with both(max_live_runs=1, log=MemoryLog(max_events=8)) as (_url, target, app):
        async with GrpcClient(target, api_key="wrong-key-000") as bad, GrpcClient(target, api_key=KEY) as g:
            with pytest.raises(Unauthorized):
                await bad.create_run("x")
            stuck = await g.create_run("x", provider="stuck")
            with pytest.raises(ClientError) as over:
                await g.create_run("y", provider="words")
            assert over.value.code == "resource_exhausted"
            with pytest.raises(Forbidden):
                await g.cancel(stuck.stream_id, stuck.read_token)  # a read token cannot cancel
            await g.cancel(stuck.stream_id, stuck.token)
            with pytest.raises(StreamNotFound):
                [e async for e in g.subscribe("no-such-stream", stuck.token)]
            with pytest.raises(ClientError) as invalid:
                await g.create_run("z", provider="words", max_tokens=10**9)
            assert invalid.value.code == "invalid_argument"
            await asyncio.sleep(0.05)  # the cancelled run frees its slot
            info = await g.create_run("long", provider="slow")
            run = app.state.tokenwire.runs.get(info.stream_id)
            await wait_for(lambda: run.finished)  # the server's loop runs in another thread
            with pytest.raises(SeqEvicted):  # retention 8 events: seq 0 is long gone
                [e async for e in g.subscribe(info.stream_id, info.read_token, from_seq=0)]


NO_WINDOW_GROWTH = [("grpc.http2.bdp_probe", 0)]  # the client keeps its receive window at 64 KiB


async def a_reader_that_stops(channel: Any, app: Any) -> tuple[Any, Any]:
    """A 4 MB run over gRPC whose reader took one message and then reads no more: (call, run)."""
    stub = pb_grpc.TokenwireStub(channel)
    call = stub.Run(run_request("x", {"provider": "bulk"}), metadata=(("authorization", f"Bearer {KEY}"),))
    await call.read()
    stream_id = dict(await call.initial_metadata())["tokenwire-stream-id"]
    return call, app.state.tokenwire.runs.get(stream_id)


async def test_flow_control_holds_the_server_back_from_a_reader_that_does_not_read() -> None:
    """4 MB of events produced; a reader that took one message and stopped has been sent only
    what its HTTP/2 window holds: the server keeps the rest in the log, not in memory per call."""
    with both() as (_url, target, app):
        async with grpc.aio.insecure_channel(target, options=NO_WINDOW_GROWTH) as channel:
            call, run = await a_reader_that_stops(channel, app)
            await wait_for(lambda: run.handle.seq >= 2000, within=30)  # every delta is in the log
            sent = app.state.tokenwire.stats.bytes_out["grpc"]
            assert sent < 200_000, sent  # 64 KiB of window and a few messages in transit, of 4 MB
            call.cancel()
            run.handle.cancel("test over")


async def test_a_reader_cut_off_for_lagging_resumes_without_losing_an_event() -> None:
    """max_lag_events 50 and a reader that stalls at first: flow control holds the server's
    writes, the reader falls behind the live run, is cut off (UNAVAILABLE) and the client resumes
    from its last seq, seeing every event once."""
    with both(max_lag_events=50) as (_url, target, app):
        async with GrpcClient(target, api_key=KEY, retry_s=0.01, options=NO_WINDOW_GROWTH) as g:
            seen = []
            async for event in g.run("go", provider="bulk"):
                seen.append(event.seq)
                if len(seen) < 5:
                    await asyncio.sleep(0.3)
                if event.seq == 2000:  # the last delta: the run is still live (it stalls), end it
                    run = app.state.tokenwire.runs.get(event.stream_id)
                    run.handle.cancel("test over")
        assert seen == list(range(2002))  # start, 2,000 deltas, done: each once, in order
        assert g.reconnects >= 1 and app.state.tokenwire.stats.lag_disconnects >= 1


async def test_a_reader_that_stops_reading_is_cut_when_its_write_makes_no_progress() -> None:
    """#30 item 5 over gRPC: a call whose reader took one message and stopped is ended
    (UNAVAILABLE, naming the seq to resume from) once a write has been stuck write_timeout_s."""
    with both(write_timeout_s=1.0) as (_url, target, app):
        async with grpc.aio.insecure_channel(target, options=NO_WINDOW_GROWTH) as channel:
            call, run = await a_reader_that_stops(channel, app)
            await wait_for(lambda: app.state.tokenwire.stats.lag_disconnects >= 1, within=30)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    await call.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no progress writing" in str(ended.value.details()) and "resume from seq" in str(
                ended.value.details()
            )
            run.handle.cancel("test over")


def test_the_sync_client_health_and_reflection() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with both() as (_url, target, _):
        with SyncGrpcClient(target, api_key=KEY) as client:
            events = list(client.run("hi", provider="words"))
        assert events[-1].type == "done" and len(events) == 22
        with grpc.insecure_channel(target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tokenwire.v1.Tokenwire")
            )
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert {"tokenwire.v1.Tokenwire", "grpc.health.v1.Health"} <= services


async def test_session_multiplexes_runs_with_credit_cancels_and_errors() -> None:
    with both() as (_url, target, _app):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.TokenwireStub(channel)
            call = stub.Session(metadata=(("authorization", f"Bearer {KEY}"),))
            replies: asyncio.Queue[Any] = asyncio.Queue()

            async def read_all() -> None:  # one reader for the call (cancelling a read ends the RPC)
                while (reply := await call.read()) != grpc.aio.EOF:
                    await replies.put(reply)
                await replies.put(None)

            reader = asyncio.create_task(read_all())
            run = pb.SessionRun(id="a", window=3, request=pb.RunRequest(prompt="hi", provider="words"))
            await call.write(pb.SessionRequest(run=run))
            started = await replies.get()
            assert started.WhichOneof("reply") == "run" and started.run.id == "a", started
            sid = started.run.stream_id
            first = [from_proto((await replies.get()).event) for _ in range(3)]
            assert [e.seq for e in first] == [0, 1, 2]
            await asyncio.sleep(0.3)  # three in flight, none acknowledged: the server waits for credit
            assert replies.empty()
            await call.write(pb.SessionRequest(ack=pb.Ack(stream_id=sid, seq=2)))
            rest: list[Event] = []
            while not rest or rest[-1].type != "done":
                rest.append(from_proto((await replies.get()).event))
                await call.write(pb.SessionRequest(ack=pb.Ack(stream_id=sid, seq=rest[-1].seq)))
            assert [e.seq for e in first + rest] == list(range(22))
            await call.write(pb.SessionRequest(cancel=pb.CancelRequest(stream_id="nope", token="x")))
            err = await replies.get()
            assert err.WhichOneof("reply") == "error" and err.error.code == "not_found"
            stuck_run = pb.SessionRun(id="b", request=pb.RunRequest(prompt="x", provider="stuck"))
            await call.write(pb.SessionRequest(run=stuck_run))
            stuck = (await replies.get()).run
            await call.write(pb.SessionRequest(cancel=pb.CancelRequest(stream_id=stuck.stream_id, token=stuck.token)))
            kinds = []
            while "done" not in kinds:
                reply = await replies.get()
                if reply.WhichOneof("reply") == "event":
                    kinds.append(from_proto(reply.event).type)
                else:
                    assert reply.accepted.op == "cancel" and reply.accepted.status == "cancelling"
            assert kinds[0] == "start" and kinds[-1] == "done"
            await call.done_writing()
            assert await replies.get() is None  # the server ends the call once the client is done
            await reader


def test_tokenwire_serve_grpc_port_serves_both_and_drains_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal

    from wire import free_port, wait_http

    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--provider", "scripted", "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port), "--api-key", KEY, "--shutdown-grace", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        with SyncGrpcClient(f"127.0.0.1:{grpc_port}", api_key=KEY) as client:
            events = list(client.run("over grpc"))
        assert "".join(getattr(e, "text", "") for e in events) == "You said: over grpc"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=0.5)  # the gRPC side closed too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_proto_messages_have_the_json_schema_s_fields() -> None:
    """tokenwire.proto and the JSON schema change together: every event type is a message in the
    Event oneof with exactly the JSON schema's fields (the envelope lives on Event itself)."""
    from tokenwire.events import json_schema

    schema = json_schema()
    kinds = {f.name: f.message_type for f in pb.Event.DESCRIPTOR.oneofs_by_name["kind"].fields}
    envelope = {"type", "stream_id", "seq", "ts"}
    assert {f.name for f in pb.Event.DESCRIPTOR.fields} - set(kinds) == envelope - {"type"}
    by_tag = {}
    for definition in schema["$defs"].values():
        tag = definition.get("properties", {}).get("type", {}).get("enum", [None])[0]
        if tag is not None:
            by_tag[tag.replace(".", "_")] = set(definition["properties"]) - envelope
    assert set(by_tag) == set(kinds)
    for name, message in kinds.items():
        assert {f.name for f in message.fields} == by_tag[name], name
