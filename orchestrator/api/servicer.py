"""The gRPC servicer: validate, call the facade, convert. Domain errors become statuses through
``orchestrator.errors.STATUS_CODES``; anything unexpected is logged and answered INTERNAL."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import grpc

from orchestrator import errors, logs, tracing
from orchestrator.api import convert, validate
from orchestrator.engine import limits
from orchestrator.engine.model import Directive
from orchestrator.service import Orchestrator
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc

logger = logging.getLogger("orchestrator.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

DIRECTIVES = {Directive.CONTINUE: pb.DIRECTIVE_CONTINUE, Directive.STOP: pb.DIRECTIVE_STOP}


def _rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Maps domain errors to gRPC statuses; never lets a raw exception reach the client."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except errors.OrchestratorError as exc:
            code = errors.status_code(exc)
            if code != grpc.StatusCode.INVALID_ARGUMENT:
                logs.log_at(
                    logger,
                    logging.DEBUG,
                    "rpc.rejected",
                    rpc=method.__name__,
                    code=code.name,
                    error=exc.message,
                )
            await context.abort(code, exc.message)
        except Exception:
            logger.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    """Implements ``durable.v1.Orchestrator``."""

    def __init__(self, orchestrator: Orchestrator, lim: limits.Limits = limits.DEFAULT_LIMITS) -> None:
        self._o = orchestrator
        self._limits = lim

    @_rpc
    async def SendEvent(  # noqa: N802 (gRPC method names)
        self, request: pb.SendEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendEventResponse:
        result = await self._o.send_events(validate.send_event(request, self._limits))
        return pb.SendEventResponse(ids=result.ids, run_ids=result.run_ids)

    @_rpc
    async def RegisterFunctions(  # noqa: N802
        self, request: pb.RegisterFunctionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterFunctionsResponse:
        app_id, specs = validate.register_functions(request)
        await self._o.register_functions(app_id, specs)
        return pb.RegisterFunctionsResponse()

    @_rpc
    async def PollWork(  # noqa: N802
        self, request: pb.PollWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.PollWorkResponse:
        app_id, function_ids, worker_id, max_items, max_wait_ms = validate.poll_work(request)
        items = await self._o.poll_work(
            app_id=app_id,
            function_ids=function_ids,
            worker_id=worker_id,
            max_items=max_items,
            max_wait=timedelta(milliseconds=max_wait_ms) if max_wait_ms else None,
        )
        return pb.PollWorkResponse(items=[convert.work_item(i) for i in items])

    @_rpc
    async def CompleteStep(  # noqa: N802
        self, request: pb.CompleteStepRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteStepResponse:
        completion = validate.complete_step(request, self._limits)
        result = await self._o.complete_step(completion, _step_trace(request))
        return pb.CompleteStepResponse(
            directive=DIRECTIVES[result.directive],
            output_json=result.output_json,
            lease_expires_unix_ms=result.lease_expires_ms,
        )

    @_rpc
    async def ExtendLease(  # noqa: N802
        self, request: pb.ExtendLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExtendLeaseResponse:
        run_id, lease_id = validate.lease(request)
        expires = await self._o.extend_lease(run_id, lease_id)
        return pb.ExtendLeaseResponse(lease_expires_unix_ms=expires)

    @_rpc
    async def ReleaseWork(  # noqa: N802
        self, request: pb.ReleaseWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseWorkResponse:
        run_id, lease_id = validate.lease(request)
        await self._o.release_work(run_id, lease_id)
        return pb.ReleaseWorkResponse()

    @_rpc
    async def GetRun(  # noqa: N802
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        view = await self._o.get_run(validate.run_id(request))
        return pb.GetRunResponse(run=convert.run(view))

    @_rpc
    async def ListRuns(  # noqa: N802
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        views = await self._o.list_runs(validate.list_runs(request))
        return pb.ListRunsResponse(runs=[convert.run(v) for v in views])

    @_rpc
    async def CancelRun(  # noqa: N802
        self, request: pb.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelRunResponse:
        view = await self._o.cancel_run(validate.run_id(request))
        return pb.CancelRunResponse(run=convert.run(view))


def _step_trace(request: pb.CompleteStepRequest) -> tracing.StepTrace | None:
    # Telemetry only: malformed values are ignored rather than refused.
    if not (request.step_span_id or request.HasField("step_attempt")):
        return None
    return tracing.StepTrace(
        span_id=tracing.parse_span_id(request.step_span_id),
        attempt=request.step_attempt if request.HasField("step_attempt") else None,
        started_ns=max(request.started_unix_nano, 0),
        ended_ns=max(request.ended_unix_nano, 0),
    )


def add_to_server(
    server: grpc.aio.Server, orchestrator: Orchestrator, lim: limits.Limits = limits.DEFAULT_LIMITS
) -> None:
    """Registers the servicer on a grpc.aio server."""
    # The generated registration function is untyped.
    pb_grpc.add_OrchestratorServicer_to_server(  # type: ignore[no-untyped-call]
        OrchestratorServicer(orchestrator, lim), server
    )
