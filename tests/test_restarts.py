"""A turn asked again after its node stopped (``step turn started`` with ``restarted``) voids its
first attempt: every way of reading a run shows the final text once. Differential over generated
transcripts (the :class:`~tokenwire.Response` aggregate is the oracle): the fold's ``void_seqs``,
the AI SDK's and AG-UI's encoders replaying the log (they cannot take text back, so a replay
leaves the void output out), a chat completion (an error, ``restarted``, rather than a wrong
text: it cannot take text back), and the Responses API's encoder (it ends the void items
``incomplete`` and leaves them out of the response's output, whoever reads it, live or not).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings

from test_snapshot import transcripts
from tokenwire.core.fold import void_seqs
from tokenwire.core.response import ResponseBuilder
from tokenwire.events import TERMINAL_TYPES, Done, Event, Start, Step, TextDelta
from tokenwire.wire.agui import AGUIEvents
from tokenwire.wire.ai_sdk import UIMessageStream
from tokenwire.wire.openai_chat import ChatCompletionChunks
from tokenwire.wire.openai_responses import ResponseEvents


def asked_again() -> list[Event]:
    """A turn whose first attempt ("The answ") is void: it was asked again ("An answer.")."""
    env: dict[str, Any] = {"stream_id": "s", "ts": 0.0}
    return [
        Start(model="m", seq=0, **env),
        Step(name="turn", status="started", detail={"turn": 1}, seq=1, **env),
        TextDelta("The answ", seq=2, **env),
        Step(name="turn", status="started", detail={"turn": 1, "restarted": True}, seq=3, **env),
        TextDelta("An answer.", seq=4, **env),
        Done(seq=5, **env),
    ]


def final_text(events: list[Event]) -> str:
    builder = ResponseBuilder("s", "m")
    for e in events:
        if isinstance(e, TextDelta):
            builder.text_parts.append(e.text)  # as the lifecycle core adds them
        else:
            builder.add(e)
    return builder.build().text


def data(frames: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for f in frames for line in f.split(b"\n") if line.startswith(b"data: {")]


def ended(events: list[Event]) -> list[Event]:
    """The transcript with a ``done`` if it has no terminal (the formats' final objects need one)."""
    if events[-1].__class__ in TERMINAL_TYPES:
        return events
    return [*events, Done(finish_reason="stop", stream_id="s", seq=events[-1].seq + 1, ts=0.0)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=transcripts())
def test_every_format_shows_the_final_text_once(events: list[Event]) -> None:
    events = ended(events)
    text = final_text(events)
    void = frozenset(void_seqs(events))
    assert "".join(e.text for e in events if isinstance(e, TextDelta) and e.seq not in void) == text

    ui = UIMessageStream("m")
    ui.void = void
    chunks = data([f for e in events for f in ui.feed(e)])
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == text

    agui = AGUIEvents("t", "r")
    agui.void = void
    frames = data([f for e in events for f in agui.feed(e)])
    assert "".join(f["delta"] for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT") == text

    chat = ChatCompletionChunks("c", model="m", created=0)  # live: it cannot take text back, so it says so
    frames = data([f for e in events for f in chat.feed(e)])
    said = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames if "choices" in f)
    errors = [f["error"]["code"] for f in frames if "error" in f]
    assert said == text or errors[-1:] == ["restarted"]

    responses = ResponseEvents("resp_s", model="m")  # no void set: it takes the first attempt back itself
    for e in events:
        responses.feed(e)
    assert responses.final is not None
    output = responses.final["output"]
    assert "".join(c["text"] for item in output if item["type"] == "message" for c in item["content"]) == text


def test_the_responses_encoder_ends_a_void_attempt_incomplete_and_leaves_it_out() -> None:
    """Live, as a reader of the Responses API sees it: the first attempt's message item is done
    with status ``incomplete``; the new attempt is a new item; the completed response's output
    (what ``output_text`` reads) holds the final attempt only."""
    script = asked_again()
    enc = ResponseEvents("resp_s", model="m")
    frames = data([f for e in script for f in enc.feed(e)])
    done = [f["item"] for f in frames if f["type"] == "response.output_item.done"]
    assert [(i["id"], i["status"], i["content"][0]["text"]) for i in done] == [
        ("msg_s_0", "incomplete", "The answ"),
        ("msg_s_1", "completed", "An answer."),
    ]
    (completed,) = [f["response"] for f in frames if f["type"] == "response.completed"]
    assert [i["id"] for i in completed["output"]] == ["msg_s_1"]
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))  # numbered the same for every reader


def test_a_live_ui_message_stream_resets_the_step_of_a_turn_asked_again() -> None:
    """Live (nothing left out): the AI SDK 7's ``reset-step`` drops the void attempt's parts
    from the client's message; a replay that left the attempt out sends none."""
    script = asked_again()
    encoder = UIMessageStream("m")
    live = [c["type"] for c in data([f for e in script for f in encoder.feed(e)])]
    assert live == [
        "start", "start-step", "text-start", "text-delta", "text-end", "reset-step", "text-start", "text-delta",
        "text-end", "finish-step", "finish",
    ]  # fmt: skip
    replay = UIMessageStream("m")
    replay.void = frozenset(void_seqs(script))
    assert "reset-step" not in [c["type"] for c in data([f for e in script for f in replay.feed(e)])]
