"""Undecodable requests become INVALID_ARGUMENT.

grpcio parses a request before any handler code runs, and answers a request that is not valid protobuf
(corrupt wire format, invalid UTF-8 in a string field) with UNKNOWN. This interceptor takes the parsing
over for every unary-unary method so such a request gets INVALID_ARGUMENT naming the message type: a
client can always tell a bad request from a server fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class DecodeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped here
    """Parses unary requests itself; a parse failure is INVALID_ARGUMENT, never UNKNOWN."""

    def __init__(self) -> None:
        # Per method, the handler grpc found and its decoding replacement: built once, not per call
        # (grpc finds the same handler object for a method every time).
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if (
            handler is None
            or handler.unary_unary is None
            or handler.request_streaming
            or handler.response_streaming
            or handler.request_deserializer is None
        ):
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            _decoding(handler.unary_unary, handler.request_deserializer, method),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _decoding(
    behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    deserialize: Callable[[bytes], Any],
    method: str,
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
    message = method.rsplit("/", 1)[-1]

    async def decode_then_call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = deserialize(raw)
        except Exception as exc:  # DecodeError, UnicodeDecodeError...: all mean "not this message"
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid {message} request message ({type(exc).__name__})",
            )
        return await behavior(request, context)

    return decode_then_call
