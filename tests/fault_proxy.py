"""A reverse proxy that injects faults between a client and a real server (aiohttp).

It stands between the operator and kube-apiserver, or between a trial and the S3 server:
every request goes through to the real server unless a ``Fault`` matches it, in which
case the proxy answers an error status, resets the connection, stalls, truncates the
body, expires a watch (an ERROR event with 410 Gone, as the API server sends when a
resourceVersion is compacted away), or lets the request through and calls a function
once the server has answered, before the client hears the answer (to kill the operator
right after a given request was done).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

Action = Literal["status", "reset", "hang", "delay", "truncate", "expire_watch", "after"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Fault:
    """What to do to the requests that match ``method``, ``path`` and ``payload`` (regular
    expressions; ``payload`` is searched in the request's body).

    The fault lets ``skip`` matching requests through, then hits the next ``times`` ones
    (``times=0``: all of them until removed).
    """

    action: Action
    method: str = ".*"
    path: str = ".*"
    status: int = 500
    seconds: float = 0.0
    times: int = 1
    skip: int = 0
    then: Callable[[], None] | None = None
    body: bytes | None = None
    payload: str = ""
    seen: int = 0
    hits: int = 0

    def matches(self, method: str, path_qs: str, payload: bytes = b"") -> bool:
        """Whether this request is one the fault hits now (and count it)."""
        if not (re.fullmatch(self.method, method) and re.search(self.path, path_qs)):
            return False
        if not re.search(self.payload.encode(), payload):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times and self.hits >= self.times):
            return False
        self.hits += 1
        return True


@dataclass
class FaultProxy:
    """Forwards ``http://127.0.0.1:<port>`` to ``upstream``, injecting ``faults``."""

    upstream: str
    ssl_context: ssl.SSLContext | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where clients connect."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, *faults: Fault) -> None:
        """Inject these faults from now on."""
        self.faults.extend(faults)

    def clear(self) -> None:
        """Inject nothing any more."""
        self.faults.clear()

    def start(self) -> FaultProxy:
        """Serve in a thread of its own; returns once listening."""
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is None or self._runner is None:
            return
        runner = self._runner
        asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        connector = TCPConnector(ssl=self.ssl_context if self.ssl_context else False)
        self._session = ClientSession(
            connector=connector, timeout=ClientTimeout(total=None), auto_decompress=False
        )
        app.on_cleanup.append(lambda _: self._session.close())
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _fault(self, request: web.Request) -> Fault | None:
        payload = await request.read()  # kept by aiohttp: _forward reads it again
        for fault in list(self.faults):
            if fault.matches(request.method, request.path_qs, payload):
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        fault = await self._fault(request)
        if fault is None or fault.action in ("delay", "truncate", "after"):
            if fault is not None and fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            return await self._forward(request, fault)
        if fault.action == "status":
            body = (
                fault.body
                or json.dumps(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": f"injected fault: {fault.status}",
                        "reason": "InternalError" if fault.status >= 500 else "Conflict",
                        "code": fault.status,
                    }
                ).encode()
            )
            return web.Response(status=fault.status, body=body, content_type="application/json")
        if fault.action == "expire_watch":
            return await self._expired_watch(request)
        if fault.action == "hang":
            await asyncio.sleep(fault.seconds)
        if request.transport is not None:  # None: the client gave up during the hang
            request.transport.close()  # reset: the client sees the connection drop
        return web.Response(status=500)

    async def _forward(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            skip_auto_headers={"Content-Type"},  # forward exactly what the client sent
        ) as upstream:
            if fault is not None and fault.action == "after" and fault.then is not None:
                # The server has done the request; the client never hears of it, so it
                # cannot act on the answer before ``then`` (e.g. kills it).
                fault.then()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    response.headers[key] = value
            truncated = fault is not None and fault.action == "truncate"
            # A HEAD's Content-Length is the object's size (s3transfer needs it); a
            # truncated body announces the whole length, as a dropped connection would.
            if (truncated or request.method == "HEAD") and upstream.content_length:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if truncated:
                data = await upstream.read()
                await response.write(data[: len(data) // 2])
                assert request.transport is not None
                request.transport.close()
                return response
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # the client went away (a killed operator)
                pass
            return response

    @staticmethod
    async def _expired_watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(request)
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": "too old resource version (injected)",
            "reason": "Expired",
            "code": 410,
        }
        await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        await response.write_eof()
        return response
