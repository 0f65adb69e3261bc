from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_STATUS_UNSPECIFIED: _ClassVar[StepStatus]
    STEP_STATUS_RUNNING: _ClassVar[StepStatus]
    STEP_STATUS_COMPLETED: _ClassVar[StepStatus]
    STEP_STATUS_FAILED: _ClassVar[StepStatus]
    STEP_STATUS_WAITING: _ClassVar[StepStatus]
    STEP_STATUS_SLEEPING: _ClassVar[StepStatus]

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    STEP_KIND_RUN: _ClassVar[StepKind]
    STEP_KIND_SLEEP: _ClassVar[StepKind]
    STEP_KIND_WAIT_FOR_EVENT: _ClassVar[StepKind]
    STEP_KIND_SEND_EVENT: _ClassVar[StepKind]

class Directive(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTIVE_UNSPECIFIED: _ClassVar[Directive]
    DIRECTIVE_CONTINUE: _ClassVar[Directive]
    DIRECTIVE_STOP: _ClassVar[Directive]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_COMPLETED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_CANCELLED: _ClassVar[RunStatus]
STEP_STATUS_UNSPECIFIED: StepStatus
STEP_STATUS_RUNNING: StepStatus
STEP_STATUS_COMPLETED: StepStatus
STEP_STATUS_FAILED: StepStatus
STEP_STATUS_WAITING: StepStatus
STEP_STATUS_SLEEPING: StepStatus
STEP_KIND_UNSPECIFIED: StepKind
STEP_KIND_RUN: StepKind
STEP_KIND_SLEEP: StepKind
STEP_KIND_WAIT_FOR_EVENT: StepKind
STEP_KIND_SEND_EVENT: StepKind
DIRECTIVE_UNSPECIFIED: Directive
DIRECTIVE_CONTINUE: Directive
DIRECTIVE_STOP: Directive
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_COMPLETED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_CANCELLED: RunStatus

class Event(_message.Message):
    __slots__ = ("id", "name", "data_json", "ts_unix_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    data_json: str
    ts_unix_ms: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., data_json: _Optional[str] = ..., ts_unix_ms: _Optional[int] = ...) -> None: ...

class SendEventRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class SendEventResponse(_message.Message):
    __slots__ = ("ids", "run_ids")
    IDS_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: str
    def __init__(self, event: _Optional[str] = ...) -> None: ...

class FunctionConfig(_message.Message):
    __slots__ = ("function_id", "triggers", "retries")
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    retries: int
    def __init__(self, function_id: _Optional[str] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., retries: _Optional[int] = ...) -> None: ...

class RegisterFunctionsRequest(_message.Message):
    __slots__ = ("app_id", "functions")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    functions: _containers.RepeatedCompositeFieldContainer[FunctionConfig]
    def __init__(self, app_id: _Optional[str] = ..., functions: _Optional[_Iterable[_Union[FunctionConfig, _Mapping]]] = ...) -> None: ...

class RegisterFunctionsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PollWorkRequest(_message.Message):
    __slots__ = ("app_id", "function_ids", "worker_id", "max_items", "max_wait_ms")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_IDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    function_ids: _containers.RepeatedScalarFieldContainer[str]
    worker_id: str
    max_items: int
    max_wait_ms: int
    def __init__(self, app_id: _Optional[str] = ..., function_ids: _Optional[_Iterable[str]] = ..., worker_id: _Optional[str] = ..., max_items: _Optional[int] = ..., max_wait_ms: _Optional[int] = ...) -> None: ...

class PollWorkResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[WorkItem]
    def __init__(self, items: _Optional[_Iterable[_Union[WorkItem, _Mapping]]] = ...) -> None: ...

class MemoStep(_message.Message):
    __slots__ = ("id", "kind", "status", "output_json", "attempts", "position")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: StepKind
    status: StepStatus
    output_json: str
    attempts: int
    position: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[StepKind, str]] = ..., status: _Optional[_Union[StepStatus, str]] = ..., output_json: _Optional[str] = ..., attempts: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class WorkItem(_message.Message):
    __slots__ = ("run_id", "app_id", "function_id", "event", "steps", "attempt", "lease_id", "lease_expires_unix_ms", "traceparent", "lost_attempts")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    LOST_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    app_id: str
    function_id: str
    event: Event
    steps: _containers.RepeatedCompositeFieldContainer[MemoStep]
    attempt: int
    lease_id: str
    lease_expires_unix_ms: int
    traceparent: str
    lost_attempts: int
    def __init__(self, run_id: _Optional[str] = ..., app_id: _Optional[str] = ..., function_id: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[MemoStep, _Mapping]]] = ..., attempt: _Optional[int] = ..., lease_id: _Optional[str] = ..., lease_expires_unix_ms: _Optional[int] = ..., traceparent: _Optional[str] = ..., lost_attempts: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("name", "message", "stack")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    message: str
    stack: str
    def __init__(self, name: _Optional[str] = ..., message: _Optional[str] = ..., stack: _Optional[str] = ...) -> None: ...

class StepOutput(_message.Message):
    __slots__ = ("output_json",)
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    output_json: str
    def __init__(self, output_json: _Optional[str] = ...) -> None: ...

class StepError(_message.Message):
    __slots__ = ("error", "retriable", "retry_after_ms")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    error: Error
    retriable: bool
    retry_after_ms: int
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., retriable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class SleepRequest(_message.Message):
    __slots__ = ("until_unix_ms",)
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    until_unix_ms: int
    def __init__(self, until_unix_ms: _Optional[int] = ...) -> None: ...

class WaitForEventRequest(_message.Message):
    __slots__ = ("event", "match", "timeout_unix_ms")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    event: str
    match: str
    timeout_unix_ms: int
    def __init__(self, event: _Optional[str] = ..., match: _Optional[str] = ..., timeout_unix_ms: _Optional[int] = ...) -> None: ...

class SendEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RunCompleted(_message.Message):
    __slots__ = ("output_json",)
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    output_json: str
    def __init__(self, output_json: _Optional[str] = ...) -> None: ...

class RunFailed(_message.Message):
    __slots__ = ("error", "retriable", "retry_after_ms")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    error: Error
    retriable: bool
    retry_after_ms: int
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., retriable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class CompleteStepRequest(_message.Message):
    __slots__ = ("run_id", "lease_id", "step_id", "step_output", "step_error", "sleep", "wait_for_event", "send_events", "run_completed", "run_failed", "started_unix_ms", "ended_unix_ms", "step_span_id", "started_unix_nano", "ended_unix_nano", "step_attempt")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STEP_ERROR_FIELD_NUMBER: _ClassVar[int]
    SLEEP_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_EVENT_FIELD_NUMBER: _ClassVar[int]
    SEND_EVENTS_FIELD_NUMBER: _ClassVar[int]
    RUN_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    RUN_FAILED_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STEP_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    STEP_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    lease_id: str
    step_id: str
    step_output: StepOutput
    step_error: StepError
    sleep: SleepRequest
    wait_for_event: WaitForEventRequest
    send_events: SendEventsRequest
    run_completed: RunCompleted
    run_failed: RunFailed
    started_unix_ms: int
    ended_unix_ms: int
    step_span_id: str
    started_unix_nano: int
    ended_unix_nano: int
    step_attempt: int
    def __init__(self, run_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., step_id: _Optional[str] = ..., step_output: _Optional[_Union[StepOutput, _Mapping]] = ..., step_error: _Optional[_Union[StepError, _Mapping]] = ..., sleep: _Optional[_Union[SleepRequest, _Mapping]] = ..., wait_for_event: _Optional[_Union[WaitForEventRequest, _Mapping]] = ..., send_events: _Optional[_Union[SendEventsRequest, _Mapping]] = ..., run_completed: _Optional[_Union[RunCompleted, _Mapping]] = ..., run_failed: _Optional[_Union[RunFailed, _Mapping]] = ..., started_unix_ms: _Optional[int] = ..., ended_unix_ms: _Optional[int] = ..., step_span_id: _Optional[str] = ..., started_unix_nano: _Optional[int] = ..., ended_unix_nano: _Optional[int] = ..., step_attempt: _Optional[int] = ...) -> None: ...

class CompleteStepResponse(_message.Message):
    __slots__ = ("directive", "output_json", "lease_expires_unix_ms")
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    directive: Directive
    output_json: str
    lease_expires_unix_ms: int
    def __init__(self, directive: _Optional[_Union[Directive, str]] = ..., output_json: _Optional[str] = ..., lease_expires_unix_ms: _Optional[int] = ...) -> None: ...

class ExtendLeaseRequest(_message.Message):
    __slots__ = ("run_id", "lease_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    lease_id: str
    def __init__(self, run_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class ExtendLeaseResponse(_message.Message):
    __slots__ = ("lease_expires_unix_ms",)
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    lease_expires_unix_ms: int
    def __init__(self, lease_expires_unix_ms: _Optional[int] = ...) -> None: ...

class ReleaseWorkRequest(_message.Message):
    __slots__ = ("run_id", "lease_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    lease_id: str
    def __init__(self, run_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class ReleaseWorkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StepAttempt(_message.Message):
    __slots__ = ("attempt", "started_unix_ms", "ended_unix_ms", "failed", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    started_unix_ms: int
    ended_unix_ms: int
    failed: bool
    error: Error
    def __init__(self, attempt: _Optional[int] = ..., started_unix_ms: _Optional[int] = ..., ended_unix_ms: _Optional[int] = ..., failed: _Optional[bool] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class StepInfo(_message.Message):
    __slots__ = ("id", "kind", "status", "attempts", "output_json", "error", "started_unix_ms", "ended_unix_ms", "wake_unix_ms", "wait_event", "wait_match", "resumed_by_event_id", "position", "attempt_history")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WAKE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_EVENT_FIELD_NUMBER: _ClassVar[int]
    WAIT_MATCH_FIELD_NUMBER: _ClassVar[int]
    RESUMED_BY_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: StepKind
    status: StepStatus
    attempts: int
    output_json: str
    error: Error
    started_unix_ms: int
    ended_unix_ms: int
    wake_unix_ms: int
    wait_event: str
    wait_match: str
    resumed_by_event_id: str
    position: int
    attempt_history: _containers.RepeatedCompositeFieldContainer[StepAttempt]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[StepKind, str]] = ..., status: _Optional[_Union[StepStatus, str]] = ..., attempts: _Optional[int] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., started_unix_ms: _Optional[int] = ..., ended_unix_ms: _Optional[int] = ..., wake_unix_ms: _Optional[int] = ..., wait_event: _Optional[str] = ..., wait_match: _Optional[str] = ..., resumed_by_event_id: _Optional[str] = ..., position: _Optional[int] = ..., attempt_history: _Optional[_Iterable[_Union[StepAttempt, _Mapping]]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "app_id", "function_id", "event_id", "status", "output_json", "error", "created_unix_ms", "ended_unix_ms", "steps", "event")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    app_id: str
    function_id: str
    event_id: str
    status: RunStatus
    output_json: str
    error: Error
    created_unix_ms: int
    ended_unix_ms: int
    steps: _containers.RepeatedCompositeFieldContainer[StepInfo]
    event: Event
    def __init__(self, id: _Optional[str] = ..., app_id: _Optional[str] = ..., function_id: _Optional[str] = ..., event_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., created_unix_ms: _Optional[int] = ..., ended_unix_ms: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[StepInfo, _Mapping]]] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("function_id", "status", "event_id", "limit", "include_steps", "app_id")
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STEPS_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    status: RunStatus
    event_id: str
    limit: int
    include_steps: bool
    app_id: str
    def __init__(self, function_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., event_id: _Optional[str] = ..., limit: _Optional[int] = ..., include_steps: _Optional[bool] = ..., app_id: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...
