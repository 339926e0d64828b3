"""Who may hold how many calls open: the verifier's defence against being exhausted by clients.

Three budgets, each closing one way an attacker found to crowd enrolled agents out
(docs/design.md §10):

- the enroll port (Enroll, health, reflection: reachable without a certificate) is a gRPC
  server of its own with its own `stream.anonymous_max_calls`, so however many calls anonymous
  clients open there, the mTLS port's budget stays the agents' (verifier/server.py);
- on either port, the services open to anyone may hold at most `stream.max_calls_per_peer`
  calls per client address (`PeerLimitInterceptor`): one host cannot take the whole budget;
- an agent may hold at most `stream.max_streams_per_agent` Attest streams (`AgentStreams`); one
  more replaces its oldest, since a reconnecting agent's old stream is usually already dead.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import unquote

import grpc

from attest.errors import PeerLimitError
from verifier.errors_map import details_for, status_for

S = TypeVar("S")
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler  # not subscriptable at run time


def peer_key(peer: str) -> str:
    """The client address a gRPC peer string names ('ipv4:10.0.0.1:5000',
    'ipv6:%5B2001:db8::1%5D:5000'), without the port; IPv6 reduced to its /64, since one host
    is commonly given a whole /64 and could otherwise open calls from as many addresses."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer  # unix sockets and the like: the whole string
    host = unquote(rest).rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class PeerCounter:
    """Open calls per client address, each address at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def __len__(self) -> int:
        return sum(self._open.values())


class PeerLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every call but those of `exempt` methods against its client address's limit;
    a call over the limit ends at once with RESOURCE_EXHAUSTED (`peer-limit`)."""

    def __init__(
        self,
        counter: PeerCounter,
        exempt: frozenset[str] = frozenset(),
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._counter = counter
        self._exempt = exempt
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._exempt:
            return handler
        return _counted(handler, self._enter, self._counter.release)

    async def _enter(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        key = peer_key(context.peer())
        if not self._counter.acquire(key):
            self._on_refused()
            error = PeerLimitError(
                f"this address holds {self._counter.limit} open calls already; close some"
            )
            await context.abort(status_for(error), details_for(error))
        return key


Enter = Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[str]]


def _counted(handler: Handler, enter: Enter, leave: Callable[[str], None]) -> Handler:
    """`handler` with its behaviour wrapped in enter/leave (the RPC's four shapes)."""
    for attribute, make in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behaviour = getattr(handler, attribute)
        if behaviour is not None:
            return make(
                _wrap(behaviour, enter, leave),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _wrap(behaviour: Any, enter: Enter, leave: Callable[[str], None]) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
            key = await enter(context)
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                leave(key)

        return generate

    async def call(request: Any, context: Any) -> Any:
        key = await enter(context)
        try:
            return await behaviour(request, context)
        finally:
            leave(key)

    return call


class AgentStreams(Generic[S]):
    """Each agent's open Attest streams, oldest first, at most `limit` per agent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, list[S]] = {}

    def add(self, agent_id: str, session: S) -> list[S]:
        """Register `session`; return the agent's oldest sessions beyond the limit, which the
        caller must end (they are no longer counted)."""
        sessions = self._open.setdefault(agent_id, [])
        sessions.append(session)
        excess = len(sessions) - self.limit
        if excess <= 0:
            return []
        evicted, sessions[:] = sessions[:excess], sessions[excess:]
        return evicted

    def discard(self, agent_id: str, session: S) -> None:
        sessions = self._open.get(agent_id)
        if sessions is None:
            return
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            del self._open[agent_id]

    def count(self, agent_id: str) -> int:
        return len(self._open.get(agent_id, ()))
