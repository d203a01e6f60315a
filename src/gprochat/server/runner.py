"""Run the server: in the foreground (``gprochat serve``) or in a background thread.

Both run uvicorn with our HTTP layer (``http.py``: httptools, uvloop, the timeouts
and limits of the config). ``serve`` binds the port first (so a port in use is an
``OSError`` from the call, and the start-up line shows the real port), then serves
in this process, or with ``workers > 1`` as several processes sharing the socket;
those build their app with ``app_from_environment`` from the serialized config in
``GPROCHAT_SERVER_CONFIG_JSON``. ``BackgroundServer`` binds 127.0.0.1 on a free port
and serves from a thread of this process: ``gprochat chat --local`` and the tests use it.

On SIGTERM/SIGINT uvicorn stops accepting, lets in-flight answers finish for up to
``config.shutdown_timeout`` seconds, then cancels them (the client sees a cut body).
A second Ctrl-C meanwhile ends the process at once (``_exit_at_once``): one log line
saying how many answers it cuts, exit status 130, no traceback. uvicorn's own
"force exit" would go on tearing down and log the lifespan task's cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker
from types import FrameType, TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from .. import __version__
from .app import create_app
from .backends import create_backend
from .config import CONFIG_ENV_VAR, ServerConfig
from .http import HttpLimits, HttpServerConfig
from .logs import configure_logging, install_abort_filter
from .metrics import MULTIPROC_ENV_VAR

__all__ = ["BackgroundServer", "app_from_environment", "freeze_startup_objects", "serve"]

_LOGGING_ENV_VAR = "GPROCHAT_SERVER_LOGGING_JSON"
#: The event loop every server process runs on (``accept.new_event_loop``).
LOOP_FACTORY = "gprochat.server.accept:new_event_loop"
logger = logging.getLogger("gprochat.server")
#: Seconds a ``--workers`` process may take to answer its manager's ping (start-up included).
WORKER_HEALTHCHECK_TIMEOUT = 30


def http_limits(config: ServerConfig) -> HttpLimits:
    """The HTTP layer's limits from the server's settings (same names)."""
    return HttpLimits(**{f.name: getattr(config, f.name) for f in dataclasses.fields(HttpLimits)})


def _uvicorn_config(app: Any, config: ServerConfig, **options: Any) -> HttpServerConfig:
    options.setdefault("log_level", "warning")
    options.setdefault("timeout_graceful_shutdown", config.shutdown_timeout)
    if options.get("workers", 1) > 1:
        # uvicorn's manager pings each worker and, without an answer in 5 s, kills it and
        # starts another; a worker answers only once it has imported our package, which a
        # busy machine can take longer than that to do (again and again, for ever).
        options.setdefault("timeout_worker_healthcheck", WORKER_HEALTHCHECK_TIMEOUT)
    if hasattr(uvicorn.Config, "get_loop_factory"):  # uvicorn >= 0.36 takes a loop factory
        # uvloop, but accepting every waiting connection at once (accept.py says why).
        options.setdefault("loop", LOOP_FACTORY)
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1;
    # the guard decides whom to believe (--trusted-proxy).
    config_class = _WorkerConfig if options.get("workers", 1) > 1 else HttpServerConfig
    return config_class(
        app, limits=http_limits(config), lifespan="on", access_log=False, proxy_headers=False,
        **options,
    )


class _WorkerConfig(HttpServerConfig):
    """The settings of ``--workers``; in each worker, also how it ends.

    A Ctrl-C outside uvicorn's server is ignored, and the worker ends with its manager.
    """

    def configure_logging(self) -> None:
        super().configure_logging()
        if multiprocessing.parent_process() is not None:  # a worker: uvicorn calls this first
            _end_with_the_manager()
            # uvicorn's server puts its handler in place for as long as it serves, then
            # puts back the one it found and raises again the signals it handled. Found
            # Python's own, a Ctrl-C as the worker ends (a second one from a terminal, or
            # the manager's) is a KeyboardInterrupt traceback from asyncio's or
            # multiprocessing's teardown. Before the server (``_interrupts_held``) SIGINT
            # is blocked and waits: a handler, unlike ignoring it, keeps it waiting.
            signal.signal(signal.SIGINT, _interrupt_outside_the_server)


def _interrupt_outside_the_server(sig: int, frame: FrameType | None) -> None:
    """A worker's Ctrl-C once its server has finished: it is ending already."""


#: prctl(2): the signal this process gets when the thread that started it ends.
_PR_SET_PDEATHSIG = 1


def _end_with_the_manager() -> None:
    """SIGTERM (a graceful shutdown) for this worker when its manager dies, even by SIGKILL.

    Otherwise a worker outlives a manager killed by SIGKILL or the OOM killer, and goes
    on serving the port with nobody to stop it. Linux only (elsewhere, nothing is done).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("this worker will not end with its manager: prctl failed (errno %d)",
                       ctypes.get_errno())
        return
    manager = multiprocessing.parent_process()
    if manager is not None and os.getppid() != manager.pid:  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _quiet_shutdown_cancellation() -> None:
    # Past --shutdown-timeout uvicorn cancels the answers still running and logs one
    # error line saying how many; the traceback of each cancelled task says nothing more.
    install_abort_filter(asyncio.CancelledError)


#: Young-generation collections between two full ones (CPython's default: 10).
_FULL_COLLECTION_EVERY = 100


def freeze_startup_objects() -> None:
    """Keep what a server process has loaded so far out of the garbage collector's scans.

    Modules, the app and pydantic's schemas live as long as the process; left in the
    collector's oldest generation, every full collection walks them all and delays
    every stream waiting meanwhile (benchmark B4, docs/benchmarks.md). Only for a
    process that is a server.
    """
    gc.collect()
    gc.freeze()
    # Each open stream keeps some objects alive for its whole answer; with the default
    # thresholds, a thousand of them start a full collection every few hundred new ones,
    # and each pauses every stream (B4). Full collections a tenth as often; young
    # garbage is still collected as before.
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, _FULL_COLLECTION_EVERY)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6); ``OSError`` if it cannot be had."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _model_of(backend: Any) -> str | None:
    """The model a backend answers with by default, if it names one beside its own name."""
    try:
        models = backend.models() if backend is not None else []
    except Exception:  # a backend that cannot say: the line goes without
        return None
    model = models[0] if models else None
    return model if model and model != getattr(backend, "name", None) else None


def announce(config: ServerConfig, sock: socket.socket, backend: Any = None) -> None:
    """The start-up line, once the port is bound: the address, backend, model, page and /v1.

    ``gprochat 0.1.0 serving on http://127.0.0.1:8000 (local backend, model
    SmolLM2-135M-Instruct, 1 worker, state in memory); chat page http://127.0.0.1:8000/,
    OpenAI-compatible API http://127.0.0.1:8000/v1``
    """
    address = sock.getsockname()
    host, port = address[0], address[1]
    url = _url(host, port)
    # Listening on every address: the links a person can open are on this machine's.
    link = _url("127.0.0.1", port) if host in ("0.0.0.0", "::") else url
    model = _model_of(backend)
    answers = f"{config.backend} backend" + (f", model {model}" if model else "")
    if config.router is not None:
        answers = f"router over {len(config.router['models'])} model(s)"
    if config.relay_url:
        answers = f"relay backend: /api/generate and the gateway relays to {config.relay_url}"
    workers = config.workers
    page_url = f"{link}/" if config.web else None
    gateway_url = f"{link}/v1" if config.gateway else None
    links = [f"chat page {page_url}"] if page_url else []
    links += [f"OpenAI-compatible API {gateway_url}"] if gateway_url else []
    logger.info(
        "gprochat %s serving on %s (%s, %d worker%s, state in %s)%s",
        __version__, url, answers, workers, "s" if workers > 1 else "",
        "redis" if config.redis_url else "memory", "; " + ", ".join(links) if links else "",
        extra={"event": "started", "url": url, "host": host, "port": port,
               "backend": config.backend, "model": model, "page_url": page_url,
               "gateway_url": gateway_url, "relay_url": config.relay_url, "workers": workers,
               "state": "redis" if config.redis_url else "memory", "version": __version__},
    )


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server; says where it listens once listening (``--port 0`` included)."""

    def __init__(self, config: uvicorn.Config, server_config: ServerConfig, backend: Any = None) -> None:
        super().__init__(config)
        self.server_config = server_config
        self.backend = backend

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            announce(self.server_config, sockets[0], self.backend)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            _exit_at_once(self)
        super().handle_exit(sig, frame)


#: The exit status after a second Ctrl-C: killed by SIGINT, as a shell reports it.
FORCED_EXIT_STATUS = 130


def _exit_at_once(server: uvicorn.Server) -> None:
    """A second Ctrl-C while shutting down: say what is cut, then end the process now.

    Nothing else runs (no task is cancelled, so nothing logs a traceback): the
    kernel closes the sockets, and each open answer ends cut, never cleanly.
    """
    answers = len(server.server_state.tasks)
    logger.warning(
        "Second Ctrl-C: exiting now, cutting %d answer%s still running",
        answers, "" if answers == 1 else "s",
        extra={"event": "forced_exit", "answers_cut": answers},
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    os._exit(FORCED_EXIT_STATUS)


def _exit_at_once_on_second_interrupt() -> None:
    """In a ``--workers`` process (whose ``uvicorn.Server`` is not ours): the same rule.

    Called while the worker builds its app, when uvicorn's handler is in place.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGINT)
    server = getattr(handler, "__self__", None)
    if isinstance(server, uvicorn.Server) and not isinstance(server, _AnnouncingServer):

        def handle_interrupt(sig: int, frame: FrameType | None) -> None:
            if server.should_exit:
                _exit_at_once(server)
            server.handle_exit(sig, frame)

        signal.signal(signal.SIGINT, handle_interrupt)
    # The manager spawned this worker with SIGINT blocked (``_interrupts_held``): a
    # handler is in place now, so a Ctrl-C that came during the start is handled here.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile, so a worker spawned inside starts with it blocked.

    A Ctrl-C from a terminal reaches the workers too, and one still starting (its
    interpreter, then our package: seconds on a busy machine) has no handler of
    uvicorn's yet: Python would print a ``KeyboardInterrupt`` traceback. A signal mask
    is inherited across fork and exec; the worker unblocks SIGINT once a handler is in
    place (``_exit_at_once_on_second_interrupt``), which then gets a Ctrl-C that came
    meanwhile. Blocked, not ignored: a Ctrl-C meanwhile is not lost here either, it
    reaches this process's handler on the way out.
    """
    # The first spawn launches multiprocessing's resource tracker, and that launch
    # *unblocks* SIGINT and SIGTERM afterwards instead of restoring the mask it found
    # (CPython gh-127586, fixed only in newer releases): every worker then started with
    # SIGINT deliverable. Launched (or found alive) first, it leaves the mask alone.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Supervisor(Multiprocess):
    """uvicorn's process manager for ``--workers``; a second Ctrl-C ends it at once.

    uvicorn's manager queues signals and reads the queue every half second, and not at
    all while it waits for its workers to finish their answers (up to
    ``--shutdown-timeout``): a second Ctrl-C would wait with it, then exit 0. Here the
    second one is handled in the signal handler itself: each worker still running is
    sent SIGINT (its own second one: ``_exit_at_once`` logs what it cuts and ends it;
    from a terminal the workers had it already), and ``SystemExit(130)`` ends this
    process once they are gone (``serve``'s clean-up still runs: the socket, the
    metrics directory).
    """

    #: Seconds the workers get to log their line and end, before SIGKILL.
    WORKER_EXIT_TIMEOUT = 5.0

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._interrupts = 0
        signal.signal(signal.SIGINT, self._handle_interrupt)

    def run(self) -> None:
        try:
            super().run()
        finally:
            # The workers are gone, and this process is about to end: a Ctrl-C now
            # would only cut ``serve``'s clean-up short, or (once CPython has removed
            # its handlers on the way out) end it by the signal instead of its status.
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    # Every way uvicorn's manager spawns a worker runs with SIGINT held (``_interrupts_held``).
    # A Ctrl-C meanwhile reaches ``_handle_interrupt`` when it ends; uvicorn's loop reads
    # its queue only between these calls anyway. (So a second Ctrl-C waits too, while
    # the health check of a worker that does not answer runs: up to its timeout.)

    def init_processes(self) -> None:
        with _interrupts_held():
            if self._interrupts:  # a Ctrl-C before the first worker: start none
                return
            super().init_processes()

    def keep_subprocess_alive(self) -> None:
        # Restarts a worker that died: one that ended on a Ctrl-C before this process
        # read it from its queue is restarted too, and must start as the first ones did.
        with _interrupts_held():
            super().keep_subprocess_alive()

    def restart_all(self) -> None:  # SIGHUP
        with _interrupts_held():
            super().restart_all()

    def handle_ttin(self) -> None:  # SIGTTIN: one worker more
        with _interrupts_held():
            super().handle_ttin()

    def _handle_interrupt(self, sig: int, frame: FrameType | None) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            self.signal_queue.append(sig)  # uvicorn's loop shuts the workers down
            return
        if self._interrupts > 2:  # exiting at once already (a key held down, say)
            return
        logger.warning(
            "Second Ctrl-C: exiting now, cutting the answers still running in %d worker%s",
            len(self.processes), "" if len(self.processes) == 1 else "s",
            extra={"event": "forced_exit", "workers": len(self.processes)},
        )
        for process in self.processes:
            # A worker this process has just reaped can still look alive: this handler
            # may run between uvicorn's waitpid and multiprocessing noting the exit code.
            # And a ProcessLookupError from here would be swallowed, SystemExit with it,
            # by that waitpid's ``except OSError`` (the command then exited 0).
            if process.process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
        for process in self.processes:
            process.process.join(self.WORKER_EXIT_TIMEOUT)
            if process.process.is_alive():
                process.process.kill()
                process.process.join()
        raise SystemExit(FORCED_EXIT_STATUS)


def serve(config: ServerConfig, **overrides: Any) -> None:
    """Serve in the foreground until interrupted; ``config.workers > 1`` forks that many.

    ``overrides`` (``host=``, ``port=``, ``workers=``, ``log_level=``, ``log_format=``)
    replace the config's fields of those names. The port is bound before anything
    else, so ``OSError`` (address in use, permission) comes out of this call. A
    Ctrl-C or SIGTERM ends it normally once the server has shut down. With workers,
    SIGINT is ignored from then on (this process is meant to end; ``_Supervisor.run``).
    """
    if overrides:
        config = dataclasses.replace(config, **overrides)
    configure_logging(config.log_level, config.log_format)
    _quiet_shutdown_cancellation()
    sock = bind_socket(config.host, config.port)
    options: dict[str, Any] = {
        "log_level": config.log_level,
        "log_config": None,  # our configure_logging, not uvicorn's dictConfig
    }
    try:
        if config.workers <= 1:
            app = create_app(config)
            freeze_startup_objects()
            server = _AnnouncingServer(_uvicorn_config(app, config, **options), config, app.state.backend)
            _stop_if_backend_fails(server, app.state.backend)
            server.run(sockets=[sock])
            if app.state.backend.status.startswith("failed"):
                raise SystemExit(1)  # the backend's log line said why
            return
        os.environ[CONFIG_ENV_VAR] = config.to_json()
        os.environ[_LOGGING_ENV_VAR] = json.dumps({"level": config.log_level, "format": config.log_format})
        own_metrics_dir = None
        if not os.environ.get(MULTIPROC_ENV_VAR):
            # Each worker writes its metric values there; /metrics on any worker sums them.
            own_metrics_dir = tempfile.mkdtemp(prefix="gprochat-metrics-")
            os.environ[MULTIPROC_ENV_VAR] = own_metrics_dir
        try:
            uvicorn_config = _uvicorn_config(
                "gprochat.server.runner:app_from_environment", config,
                factory=True, workers=config.workers, **options,
            )
            # Its Ctrl-C handler in place before the start-up line: a Ctrl-C from then
            # on is a clean shutdown, never a KeyboardInterrupt in the middle of this.
            supervisor = _Supervisor(uvicorn_config, sockets=[sock])
            announce(config, sock, _named_backend(config))
            supervisor.run()
        finally:
            if own_metrics_dir:
                shutil.rmtree(own_metrics_dir, ignore_errors=True)
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly: done.
        pass
    finally:
        sock.close()


def _named_backend(config: ServerConfig) -> Any:
    """The workers' backend, made (never started) in this process to name its model."""
    try:
        return create_backend(config.backend, **config.backend_options)
    except Exception:  # each worker makes its own, and logs why it cannot
        return None


def serve_socket(app: Any, config: ServerConfig, sock: socket.socket) -> None:
    """Serve ``app`` on a bound socket in this thread, with the HTTP layer ``serve`` uses.

    For a process that is handed its socket (the benchmark harness's servers).
    """
    uvicorn.Server(_uvicorn_config(app, config)).run(sockets=[sock])


def _stop_if_backend_fails(server: uvicorn.Server, backend: Any) -> None:
    """Stop ``server`` if the backend fails to load its model (a local GGUF that is corrupt).

    One process serving nothing but 503s is worse than a clear exit. (With ``--workers``
    such a worker stays up and its ``/healthz`` answers 503 "unavailable" saying why.)
    """

    def watch() -> None:
        while backend.status == "loading":
            threading.Event().wait(0.1)
        if backend.status != "ready":
            server.should_exit = True

    threading.Thread(target=watch, name="gprochat-backend-watch", daemon=True).start()


def app_from_environment() -> Starlette:
    """The app a worker process serves: config and logging from environment variables."""
    logging_options = json.loads(os.environ.get(_LOGGING_ENV_VAR, "{}"))
    configure_logging(logging_options.get("level", "info"), logging_options.get("format", "json"))
    _quiet_shutdown_cancellation()
    _exit_at_once_on_second_interrupt()
    text = os.environ.get(CONFIG_ENV_VAR)
    app = create_app(ServerConfig.from_json(text) if text else ServerConfig())
    freeze_startup_objects()
    return app


class _StoppableServer(uvicorn.Server):
    """uvicorn's server, whose ``stop_soon()`` (from any thread) ends its main loop at once.

    uvicorn's main loop looks at ``should_exit`` every 0.1 s, and its shutdown pauses
    0.1 s for open connections to close; a test suite that starts and stops a server
    per test spent both in every teardown. Here the same ticks (``on_tick``: the Date
    header, ``limit_max_requests``) run every 0.1 s, but a stop wakes the loop instead
    of waiting for the next one, and a shutdown skips the pause once every connection
    is closed (with an answer in flight, the shutdown is uvicorn's).
    """

    _TICK = 0.1  # uvicorn's

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.serving = threading.Event()  # set once started, for a thread waiting on it

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self.serving.set()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._TICK)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # An idle connection closes when asked (its transport reports so a loop turn or
        # two later); an answer in flight finishes first, as uvicorn's shutdown lets it.
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        for _ in range(3):
            if not (state.connections or state.tasks):
                break
            await asyncio.sleep(0)
        if state.connections or state.tasks:
            await super().shutdown(sockets)
            return
        logging.getLogger("uvicorn.error").info("Shutting down")  # as uvicorn's says
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()

    def stop_soon(self) -> None:
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(wake.set)


class BackgroundServer:
    """A server in a daemon thread on an ephemeral loopback port.

    >>> with BackgroundServer(ServerConfig()) as server:
    ...     print(server.base_url)
    http://127.0.0.1:...
    """

    def __init__(
        self, config: ServerConfig | None = None, *, app: Any = None, host: str = "127.0.0.1"
    ) -> None:
        self.app = app if app is not None else create_app(config or ServerConfig())
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        app_config = getattr(getattr(self.app, "state", None), "config", None)
        config = app_config if isinstance(app_config, ServerConfig) else (config or ServerConfig())
        self.shutdown_timeout: float | None = config.shutdown_timeout
        # Signals stay the host program's: uvicorn installs its handlers only when it
        # serves from the main thread (Server.capture_signals), and this is another.
        self._server = _StoppableServer(_uvicorn_config(self.app, config))
        self._thread = threading.Thread(target=self._run, name="gprochat-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self, *, wait_for_backend: bool = True) -> BackgroundServer:
        """Serve; unless told not to, also wait until the backend has loaded its model."""
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gprochat server failed to start; see the log above")
            self._server.serving.wait(0.01)
        backend = getattr(getattr(self.app, "state", None), "backend", None)
        while wait_for_backend and backend is not None and backend.status == "loading":
            threading.Event().wait(0.02)
        if wait_for_backend and backend is not None and backend.status != "ready":
            self.stop()
            raise RuntimeError(f"the gprochat server's backend cannot answer: {backend.status}")
        return self

    def stop(self) -> None:
        self._server.stop_soon()
        self._thread.join(timeout=10 + (self.shutdown_timeout or 0))
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
