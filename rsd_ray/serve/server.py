"""``RackServer``: a rack behind its gateway, its HTTP and gRPC servers, until it is shut down.

The same object runs in the ``rsd-ray serve`` process (inline executor) and inside
``ServeActor`` (Ray executor). Three threads: the caller's, the controller's (the
paced epoch loop) and the servers' event loop (uvicorn and grpc.aio together).
Sockets are bound before anything starts, so a port in use is a clear error.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time
from dataclasses import dataclass

from rsd_ray.config import ConfigError
from rsd_ray.rack.controller import Controller
from rsd_ray.router import POLICIES
from rsd_ray.serve.gateway import Gateway
from rsd_ray.serve.metrics import RackMetrics
from rsd_ray.serve.jobs import ServeContext
from rsd_ray.serve.openai_api import ARRIVAL, make_app
from rsd_ray.serve.text import OutputLengths, Tokens
from rsd_ray.report.telemetry import attach

SERVE_HORIZON_S = 1e9           # a served rack's window stays open until the server is shut down
FLUSH_MAX_S = 5.0               # after the rack stopped: the longest wait for paced tokens to reach clients
MAX_QUEUED_PER_INSTANCE = 4     # gateway queue before the next epoch, in multiples of the rack's admission bound
LOOP_PROBE_S = 0.05             # how often the event loop's lateness is measured (often enough for its mean)
KEEP_ALIVE_S = 75.0             # an idle client connection is kept this long: longer than clients keep theirs
                                # (httpx 5 s, aiohttp 15 s, LiteLLM's), so a client never reuses one the server
                                # is closing (uvicorn's 5 s default raced httpx's 5 s: a transport error in ~1,000)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 50051          # 0: no gRPC server
    pace: float = 1.0
    instance_ports: int | None = None   # instance i also listens on instance_ports + i
    served_model_name: str | None = None
    tokenizer: str | None = None


def _bind(host: str, port: int, flag: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError("command line", flag, port, f"cannot listen on {host}:{port} ({err.strerror or err}); "
                          "choose another port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _http_protocol():
    """uvicorn's httptools protocol, stamping each request's arrival as its first bytes are parsed: under load
    a request waits for the event loop between that and the app's first line, and the client counts that wait
    in its TTFT, so the rack does too. Without httptools, uvicorn's default (the app stamps, later)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class Stamping(HttpToolsProtocol):
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ARRIVAL] = time.monotonic()
    return Stamping


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (uvicorn[standard], as vLLM serves): every token is a write on
    this loop, and uvloop makes each about twice as cheap; asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class RackServer:
    def __init__(self, spec, executor: str = "inline", options: ServeOptions = ServeOptions(),
                 version: str = "0", faults=(), **executor_options):
        self.options = options
        spec = dataclasses.replace(spec, duration_s=SERVE_HORIZON_S)
        self.gateway = Gateway(options.pace, 0)
        self.controller = Controller(spec, executor, source=self.gateway, **executor_options)
        self.gateway.max_queued = (MAX_QUEUED_PER_INSTANCE * spec.router.max_pending_per_instance
                                   * len(self.controller.instance_server))
        self.controller.inject(faults)
        self.gateway.attach(self.controller)
        model = options.served_model_name or spec.model.name
        max_len = spec.engine.max_model_len or spec.model.max_seq_len
        memory = self.controller.plan.memory
        cache_info = {"block_size": str(memory.block_size), "num_gpu_blocks": str(memory.num_blocks),
                      "cache_dtype": spec.engine.kv_cache_dtype, "gpu_memory_utilization": str(spec.engine.kv_cache_fraction),
                      "enable_prefix_caching": str(spec.engine.enable_prefix_caching)}
        self.metrics = RackMetrics(self.gateway, model, spec.device.name, spec.rack.cards_per_server,
                                   len(self.controller.instance_server), max_len, cache_info)
        self.telemetry = attach(self.controller)
        writer = None
        if spec.model.checkpoint:                        # --model DIR: its split weights write the text
            from rsd_ray.functional.writer import FunctionalWriter
            writer = FunctionalWriter(spec, type(self.controller.executor))
            if writer.tokenizer is None:
                raise ConfigError(spec.model.checkpoint, "tokenizer.json", "missing", "serving real text needs "
                                  "the checkpoint's tokenizer.json (make-model writes one)")
            self.gateway.functional = lambda: {"checkpoint": str(spec.model.checkpoint),   # the results' part
                                               "link_bytes": writer.link_bytes()}
        hashing = any(e.enable_prefix_caching for e in spec.engines) or \
            getattr(POLICIES[spec.router.policy], "uses_prefix", False)
        self.ctx = ServeContext(self.gateway, model, max_len, len(self.controller.instance_server),
                                Tokens(options.tokenizer), OutputLengths(spec.workload.output, max_len, spec.seed + 2),
                                version, self.metrics, writer, spec.engine.hash_block_tokens if hashing else 0,
                                options.instance_ports, by_priority=spec.engine.scheduling_policy == "priority")
        self.spec = spec
        self.outcome = None
        self.failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list = []
        self._grpc = None

    # --- start ------------------------------------------------------------------------------------------
    def start(self) -> dict:
        """Bind every socket, start the servers and the rack; returns the URLs."""
        o = self.options
        socks = [(_bind(o.host, o.port, "--port"), make_app(self.ctx))]
        if o.instance_ports:
            socks += [(_bind(o.host, o.instance_ports + i, "--instance-ports"), make_app(self.ctx, i))
                      for i in range(self.ctx.instances)]
        ready = threading.Event()
        self._loop_thread = threading.Thread(target=self._serve, args=(socks, ready), name="rsd-ray-serve",
                                             daemon=True)
        self._loop_thread.start()
        ready.wait()
        if self.failed:
            raise self.failed
        self.gateway.pacer.restart()                 # virtual time 0 is now, not when the rack began to build
        self._controller_thread = threading.Thread(target=self._run_rack, name="rsd-ray-rack", daemon=True)
        self._controller_thread.start()
        return self.urls()

    def urls(self) -> dict:
        o, host = self.options, self.options.host
        urls = {"openai": f"http://{host}:{o.port}/v1", "metrics": f"http://{host}:{o.port}/metrics",
                "instances": [f"http://{host}:{o.instance_ports + i}/v1" if o.instance_ports
                              else f"http://{host}:{o.port}/instances/{i}/v1" for i in range(self.ctx.instances)]}
        if o.grpc_port:
            urls["grpc"] = f"{host}:{o.grpc_port}"
        return urls

    def _serve(self, socks, ready: threading.Event) -> None:
        import uvicorn
        loop = self._loop = _event_loop()
        asyncio.set_event_loop(loop)

        async def main():
            if self.options.grpc_port:
                from rsd_ray.serve.grpc_api import start_grpc
                try:
                    self._grpc = await start_grpc(self, self.options.host, self.options.grpc_port)
                except Exception as err:           # noqa: BLE001  (reported to start())
                    self.failed = err
                    ready.set()
                    return
            self._servers = [uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                           lifespan="off", timeout_graceful_shutdown=2,
                                                           timeout_keep_alive=KEEP_ALIVE_S,
                                                           http=_http_protocol()))
                             for _, app in socks]
            tasks = [asyncio.ensure_future(s.serve(sockets=[sock])) for s, (sock, _) in zip(self._servers, socks)]
            probe = asyncio.ensure_future(self._probe_loop())
            while not all(s.started for s in self._servers) and not any(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            probe.cancel()
            if self._grpc is not None:
                await self._grpc.stop(1)

        try:
            loop.run_until_complete(main())
        finally:
            ready.set()
            loop.close()

    async def _probe_loop(self) -> None:
        """How late the event loop wakes a sleeper: the wait a new request has before it is read and stamped."""
        while True:
            due = time.monotonic() + LOOP_PROBE_S
            await asyncio.sleep(LOOP_PROBE_S)
            self.gateway.loop_probed(max(0.0, time.monotonic() - due))

    def _run_rack(self) -> None:
        try:
            self.outcome = self.controller.run([self.gateway, self.telemetry])
        finally:
            self.gateway.close("stopped")
            self.gateway.fail_all("the rack stopped before the request finished")

    # --- while serving ------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._controller_thread.is_alive()

    def status(self) -> dict:
        g, c = self.gateway, self.controller
        return {"pid": os.getpid(), "t": g.t, "pace": g.pacer.pace, "lag_s": g.behind_s, "rack_lag_s": g.lag_s,
                "delivery_lag_s": g.delivery.now_s, "loop_lag_s": g.loop_lag.now_s, "pace_resets": g.pace_resets,
                "in_flight": len(c.ledger.in_flight), "instances": self.ctx.instances, "healthy": sum(g.health),
                **g.counts}

    def frame(self) -> dict:
        """The dashboard's frame (``rsd_ray.report.telemetry``) with what the gateway and router know."""
        g = self.gateway
        return self.telemetry.frame(pace=g.pacer.pace, lag_s=g.behind_s, refused=g.counts["refused"],
                                    routed=self.controller.router.sent.tolist())

    def contexts(self) -> list[dict]:
        """rbln-smi's contexts: each instance holds one on each of its cards."""
        memory = {f.card: f.memory_used for f in self.gateway.cards}
        healthy = self.gateway.health
        return [{"npu": card, "process": f"rsd-ray instance {i}", "pid": os.getpid(), "ctx": i, "priority": 0,
                 "memalloc": memory.get(card, 0), "status": "running" if healthy[i] else "failed"}
                for i, group in enumerate(self.controller.plan.placement.groups) for card in group]

    # --- stop ---------------------------------------------------------------------------------------------
    def stop_now(self) -> None:
        """End at the next epoch (a second Ctrl-C), status interrupted."""
        self.controller.stop("interrupted (Ctrl-C)")

    def shutdown(self, drain_s: float, now: bool = False):
        """Refuse new requests, let the accepted ones finish (at most ``drain_s`` wall seconds), stop the
        servers; returns the controller's Outcome. ``now``: end at the next epoch (status interrupted)."""
        self.gateway.close("shutting down")
        if now:
            self.controller.stop("interrupted (Ctrl-C)")
        else:
            self.controller.close(drain_s * self.gateway.pacer.pace)
        self._controller_thread.join(drain_s + 60.0)
        if self._controller_thread.is_alive():
            self.controller.stop("the drain did not end in time")
            self._controller_thread.join()
        t_last = self.gateway.pacer.wall(self.controller.t)      # let paced tokens already made reach clients
        time.sleep(min(FLUSH_MAX_S, max(0.0, t_last - time.monotonic())) + 0.2)
        for server in self._servers:
            server.should_exit = True
        self._loop_thread.join(10.0)
        return self.outcome
