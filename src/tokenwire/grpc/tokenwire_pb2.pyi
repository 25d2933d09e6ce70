from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Start(_message.Message):
    __slots__ = ("model", "request_id", "meta", "parent")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_id: str
    meta: str
    parent: Parent
    def __init__(self, model: _Optional[str] = ..., request_id: _Optional[str] = ..., meta: _Optional[str] = ..., parent: _Optional[_Union[Parent, _Mapping]] = ...) -> None: ...

class Parent(_message.Message):
    __slots__ = ("stream_id", "call_id", "depth")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    call_id: str
    depth: int
    def __init__(self, stream_id: _Optional[str] = ..., call_id: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ReasoningDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolCallStart(_message.Message):
    __slots__ = ("call_id", "name")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ToolCallDelta(_message.Message):
    __slots__ = ("call_id", "args_delta")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_DELTA_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    args_delta: str
    def __init__(self, call_id: _Optional[str] = ..., args_delta: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("call_id", "name", "args")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    args: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., args: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("call_id", "name", "result", "is_error")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    result: str
    is_error: bool
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., result: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("name", "status", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Data(_message.Message):
    __slots__ = ("name", "data", "id", "transient")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: str
    id: str
    transient: bool
    def __init__(self, name: _Optional[str] = ..., data: _Optional[str] = ..., id: _Optional[str] = ..., transient: _Optional[bool] = ...) -> None: ...

class StateSnapshot(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: str
    def __init__(self, snapshot: _Optional[str] = ...) -> None: ...

class StateDelta(_message.Message):
    __slots__ = ("delta",)
    DELTA_FIELD_NUMBER: _ClassVar[int]
    delta: str
    def __init__(self, delta: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("duration_s", "ttft_s", "output_tokens", "tokens_per_s", "max_gap_s", "stalls")
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MAX_GAP_S_FIELD_NUMBER: _ClassVar[int]
    STALLS_FIELD_NUMBER: _ClassVar[int]
    duration_s: float
    ttft_s: float
    output_tokens: int
    tokens_per_s: float
    max_gap_s: float
    stalls: int
    def __init__(self, duration_s: _Optional[float] = ..., ttft_s: _Optional[float] = ..., output_tokens: _Optional[int] = ..., tokens_per_s: _Optional[float] = ..., max_gap_s: _Optional[float] = ..., stalls: _Optional[int] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("finish_reason", "usage", "stats", "reason")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    finish_reason: str
    usage: TokenUsage
    stats: Stats
    reason: str
    def __init__(self, finish_reason: _Optional[str] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "retryable", "source")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    source: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("stream_id", "seq", "ts", "start", "text_delta", "reasoning_delta", "tool_call_start", "tool_call_delta", "tool_call", "tool_result", "step", "usage", "done", "error", "data", "state_snapshot", "state_delta")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    REASONING_DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_START_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STATE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_DELTA_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    ts: float
    start: Start
    text_delta: TextDelta
    reasoning_delta: ReasoningDelta
    tool_call_start: ToolCallStart
    tool_call_delta: ToolCallDelta
    tool_call: ToolCall
    tool_result: ToolResult
    step: Step
    usage: Usage
    done: Done
    error: Error
    data: Data
    state_snapshot: StateSnapshot
    state_delta: StateDelta
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts: _Optional[float] = ..., start: _Optional[_Union[Start, _Mapping]] = ..., text_delta: _Optional[_Union[TextDelta, _Mapping]] = ..., reasoning_delta: _Optional[_Union[ReasoningDelta, _Mapping]] = ..., tool_call_start: _Optional[_Union[ToolCallStart, _Mapping]] = ..., tool_call_delta: _Optional[_Union[ToolCallDelta, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., step: _Optional[_Union[Step, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., data: _Optional[_Union[Data, _Mapping]] = ..., state_snapshot: _Optional[_Union[StateSnapshot, _Mapping]] = ..., state_delta: _Optional[_Union[StateDelta, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content", "tool_call_id", "name", "tool_calls")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    tool_call_id: str
    name: str
    tool_calls: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., name: _Optional[str] = ..., tool_calls: _Optional[str] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("prompt", "messages", "system", "provider", "model", "max_tokens", "temperature", "seed", "stop", "tools", "tool_choice", "max_steps", "limits", "meta", "background")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    system: str
    provider: str
    model: str
    max_tokens: int
    temperature: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    tools: _containers.RepeatedScalarFieldContainer[str]
    tool_choice: str
    max_steps: int
    limits: str
    meta: str
    background: bool
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., system: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., tools: _Optional[_Iterable[str]] = ..., tool_choice: _Optional[str] = ..., max_steps: _Optional[int] = ..., limits: _Optional[str] = ..., meta: _Optional[str] = ..., background: _Optional[bool] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("stream_id", "token", "from_seq", "tree", "cursor", "streams", "mine")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    MINE_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    token: str
    from_seq: int
    tree: bool
    cursor: str
    streams: _containers.RepeatedCompositeFieldContainer[StreamRef]
    mine: bool
    def __init__(self, stream_id: _Optional[str] = ..., token: _Optional[str] = ..., from_seq: _Optional[int] = ..., tree: _Optional[bool] = ..., cursor: _Optional[str] = ..., streams: _Optional[_Iterable[_Union[StreamRef, _Mapping]]] = ..., mine: _Optional[bool] = ...) -> None: ...

class StreamRef(_message.Message):
    __slots__ = ("stream_id", "token", "from_seq")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    token: str
    from_seq: int
    def __init__(self, stream_id: _Optional[str] = ..., token: _Optional[str] = ..., from_seq: _Optional[int] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("stream_id", "token", "reason")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    token: str
    reason: str
    def __init__(self, stream_id: _Optional[str] = ..., token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("stream_id", "status")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    status: str
    def __init__(self, stream_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("run", "subscribe", "ack", "cancel", "tool_result", "approve", "unsubscribe")
    RUN_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    run: SessionRun
    subscribe: SessionSubscribe
    ack: Ack
    cancel: CancelRequest
    tool_result: ToolResultRequest
    approve: ApproveRequest
    unsubscribe: Unsubscribe
    def __init__(self, run: _Optional[_Union[SessionRun, _Mapping]] = ..., subscribe: _Optional[_Union[SessionSubscribe, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., cancel: _Optional[_Union[CancelRequest, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResultRequest, _Mapping]] = ..., approve: _Optional[_Union[ApproveRequest, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ...) -> None: ...

class ApproveRequest(_message.Message):
    __slots__ = ("stream_id", "call_id", "approved", "token")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    call_id: str
    approved: bool
    token: str
    def __init__(self, stream_id: _Optional[str] = ..., call_id: _Optional[str] = ..., approved: _Optional[bool] = ..., token: _Optional[str] = ...) -> None: ...

class SessionRun(_message.Message):
    __slots__ = ("id", "window", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    window: int
    request: RunRequest
    def __init__(self, id: _Optional[str] = ..., window: _Optional[int] = ..., request: _Optional[_Union[RunRequest, _Mapping]] = ...) -> None: ...

class SessionSubscribe(_message.Message):
    __slots__ = ("request", "window")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    request: SubscribeRequest
    window: int
    def __init__(self, request: _Optional[_Union[SubscribeRequest, _Mapping]] = ..., window: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("stream_id", "seq")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class ToolResultRequest(_message.Message):
    __slots__ = ("stream_id", "token", "call_id", "result", "is_error")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    token: str
    call_id: str
    result: str
    is_error: bool
    def __init__(self, stream_id: _Optional[str] = ..., token: _Optional[str] = ..., call_id: _Optional[str] = ..., result: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("id", "stream_id", "token", "read_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    READ_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    stream_id: str
    token: str
    read_token: str
    def __init__(self, id: _Optional[str] = ..., stream_id: _Optional[str] = ..., token: _Optional[str] = ..., read_token: _Optional[str] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class OpAccepted(_message.Message):
    __slots__ = ("op", "stream_id", "call_id", "status", "cursor")
    OP_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    op: str
    stream_id: str
    call_id: str
    status: str
    cursor: str
    def __init__(self, op: _Optional[str] = ..., stream_id: _Optional[str] = ..., call_id: _Optional[str] = ..., status: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("event", "run", "error", "accepted")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    event: Event
    run: RunStarted
    error: SessionError
    accepted: OpAccepted
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., run: _Optional[_Union[RunStarted, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ..., accepted: _Optional[_Union[OpAccepted, _Mapping]] = ...) -> None: ...
