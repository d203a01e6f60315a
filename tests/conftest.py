"""Shared fixtures (our server on a free loopback port, started per test) and the markers.

Every test gets its markers here, from what it uses, so a new test is marked without
anyone remembering to (``pytest -m "not slow"`` is the inner loop, under a minute):

    marker    the test...
    browser   drives Chromium through Playwright (it uses the ``browser`` fixture)
    model     loads the real GGUF model (its code, or a helper or fixture it uses, names
                ``LocalBackend`` or ``require_local_model``)
    redis     starts ``redis-server`` (the ``redis_server`` fixture; through
                ``request.getfixturevalue("redis_server")``, in the cases whose
                parameter id says redis)
    slow      any of the above, or starts a process (``gprochat serve``, the CLI, a
                pseudo-terminal): its code, or a helper or fixture of the test tree
                it uses, names ``subprocess``, ``Popen`` or ``pexpect``; or it is
                in ``_MEASURED_SLOW`` (a second or more on an idle machine)

"Uses" is read from the code, following the test tree's own functions, classes and
fixtures (also those a test imports in its body), never running anything. A module
can also set ``pytestmark`` itself.

``GPROCHAT_TEST_GC=1`` forces a garbage collection after every test (after its
fixtures are torn down): an object the test left unclosed (a socket, a client, a
stream) is then reported as a ``ResourceWarning`` (an error) by the test that leaked
it, not at random by whichever test a collection happens to fall in. With
``PYTHONTRACEMALLOC=20`` the warning shows where the object was made.
"""

from __future__ import annotations

import dis
import gc
import importlib
import importlib.util
import inspect
import os
import types
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from gprochat.server import BackgroundServer, ServerConfig, create_app
from gprochat.server.backends import Backend

ServerFactory = Callable[..., BackgroundServer]


@pytest.fixture(autouse=os.environ.get("GPROCHAT_TEST_GC") == "1")
def collect_garbage_after_the_test() -> Iterator[None]:
    """Set up first among a test's function fixtures, so torn down last: a collection after the
    rest are gone reports what the test left open (see ``GPROCHAT_TEST_GC`` above)."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def gprochat_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every test (and every ``gprochat`` it runs) keeps its conversation log in a temp dir."""
    home = tmp_path_factory.mktemp("gprochat-home")
    monkeypatch.setenv("GPROCHAT_HOME", str(home))
    return home


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """``make_server(config=None, backend=None)`` -> a started ``BackgroundServer``."""
    servers: list[BackgroundServer] = []

    def factory(
        config: Optional[ServerConfig] = None, backend: Optional[Backend] = None, **kw: Any
    ) -> BackgroundServer:
        app = create_app(config or ServerConfig(**kw), backend=backend)
        server = BackgroundServer(app=app).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def echo_server(make_server: ServerFactory) -> BackgroundServer:
    """Our server with the default settings and the echo backend."""
    return make_server()


# What a test's code names that means it starts a process, or loads the model.
_PROCESS_NAMES = frozenset({"subprocess", "Popen", "pexpect", "create_subprocess_exec"})
_MODEL_NAMES = frozenset({"LocalBackend", "require_local_model"})
_MARKER_FIXTURES = {"browser": "browser", "redis_server": "redis"}


# Tests that start no process but wait for timeouts, or measure thousands of streams.
_MEASURED_SLOW = frozenset({
    "tests/server/test_replay_memory.py::test_bytes_per_remembered_signature_are_few",
    "tests/server/test_replay_memory.py::test_memory_stays_bounded_over_many_windows",
    "tests/server/backends/test_pool.py::test_1000_concurrent_slow_answers_through_the_gemini_backend",
    "tests/server/backends/test_pool.py::test_500_concurrent_slow_streams_through_the_gateway_and_the_openai_backend",
    "tests/test_llm_plugin.py::test_llm_command_line",
    "tests/server/test_http_limits.py::test_a_body_trickled_forever_is_cut_by_the_body_timeout",
    "tests/server/test_http_limits.py::test_a_second_request_on_a_kept_alive_connection_has_its_own_header_timeout",
    "tests/server/test_http_limits.py::test_beyond_max_connections_idle_ones_are_closed_to_make_room",
    "tests/server/test_http_limits.py::test_500_slow_connections_are_all_closed",
    "tests/server/test_http_limits.py::test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout",
    "tests/server/test_http_limits.py::test_a_head_sent_one_byte_a_second_gets_408",
    "tests/server/test_http_limits.py::test_a_body_that_stops_gets_408_after_the_idle_timeout",
    "tests/server/test_http_limits.py::test_an_idle_keep_alive_connection_is_closed",
    "tests/server/test_guard.py::test_streams_beyond_the_limit_get_503_and_slots_are_released",
    "tests/server/test_protocol_compat.py::test_chunks_are_flushed_as_the_backend_produces_them",
    "tests/server/test_protocol_compat.py::test_backend_failure_is_a_server_error_for_the_provider",
    "tests/server/test_gateway_guard.py::test_concurrent_streams_beyond_the_limit_get_503",
    "tests/server/test_relay.py::test_relay_to_nothing_is_502",
    "tests/server/test_guard_limits.py::test_an_unreachable_redis_fails_closed_or_open",
    "tests/providers/test_retries.py::test_backoff_grows_between_attempts",
    "tests/providers/test_timeouts.py::test_a_steady_stream_is_not_a_read_timeout_but_the_total_limit_fires",
    "tests/test_client.py::test_errors_raise_at_create_even_when_streaming",
    # Measured with --durations on a busy machine, each waiting on a timer of a second or
    # more (a stalling upstream's read timeout, a Retry-After, a keep-alive or body timeout).
    "tests/providers/test_failover.py::test_each_fault_before_the_first_text_fails_over_and_one_answer_arrives",
    "tests/providers/test_failover.py::test_when_all_fail_one_error_lists_each_deployment_and_why",
    "tests/providers/test_failover.py::test_a_retry_round_waits_for_the_retry_after_before_asking_again",
    "tests/test_client_failover.py::test_client_fails_over_and_says_why_when_none_answers",
    "tests/test_client_failover.py::test_async_client_fails_over_and_streams_the_answer_once",
    "tests/server/test_http_limits.py::test_a_refusal_before_routing_is_logged_and_counted[slow-head]",
    "tests/server/test_http_limits.py::test_a_body_too_slow_is_one_line_for_its_route",
    "tests/server/test_http_limits.py::test_an_upgrade_without_a_body_is_served_as_http_1_1",
    "tests/providers/test_retries.py::test_retry_after_as_an_http_date_is_honoured",
    "tests/providers/test_retries.py::test_503_with_retry_after_is_retried_once_after_the_wait",
    "tests/server/test_guard_limits.py::test_retry_after_counts_from_the_oldest_request_in_the_window[memory]",
    "tests/server/backends/test_router.py::test_every_broken_deployment_is_skipped_and_each_request_answered_once",
})


def _names_used(obj: Any, seen: set[int]) -> set[str]:
    """The global and attribute names ``obj``'s code refers to (and the fixtures it
    asks for with ``getfixturevalue``), following into the functions, classes and fixtures of the test tree
    (``tests.*``) that it names."""
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    if isinstance(obj, type):
        names: set[str] = set()
        # Its own methods and properties and those of the test tree's classes it derives
        # from (a subclass of processes.ServeProcess starts a process in the base class).
        for cls in (base for base in obj.__mro__ if _in_test_tree(base)):
            for member in vars(cls).values():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    member = member.fget
                if isinstance(member, types.FunctionType):
                    names |= _names_used(member, seen)
        return names
    code = getattr(obj, "__code__", None)
    if not isinstance(code, types.CodeType):
        return set()
    names = set()
    codes = [code]
    while codes:  # the function's own code and the functions nested in it
        current = codes.pop()
        names.update(current.co_names)
        if "getfixturevalue" in current.co_names:  # the fixtures it asks for by name
            names.update(c for c in current.co_consts if isinstance(c, str) and c.isidentifier())
        codes.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    module_globals = getattr(obj, "__globals__", {})
    for target in [module_globals.get(name) for name in names] + _imported_in(code, module_globals):
        if _in_test_tree(target):
            names |= _names_used(target, seen)
    return names


_IMPORT_FROM = dis.opmap["IMPORT_FROM"].to_bytes(1, "little")


def _imported_in(code: types.CodeType, module_globals: dict[str, Any]) -> list[Any]:
    """What ``from <a test-tree module> import ...`` inside the function (or the
    functions nested in it) binds: ``from ..processes import served`` in a test's body."""
    found: list[Any] = []
    codes = [code]
    while codes:
        current = codes.pop()
        codes.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        if _IMPORT_FROM not in current.co_code:  # most functions import nothing
            continue
        instructions = list(dis.get_instructions(current))
        module = None
        for index, instruction in enumerate(instructions):
            if instruction.opname == "IMPORT_NAME":
                level = instructions[index - 2].argval if index >= 2 else 0
                name = "." * (level or 0) + instruction.argval
                try:
                    absolute = importlib.util.resolve_name(name, module_globals.get("__package__"))
                except (ImportError, ValueError):
                    absolute = name
                module = importlib.import_module(absolute) if absolute.startswith("tests.") else None
            elif instruction.opname == "IMPORT_FROM" and module is not None:
                found.append(getattr(module, instruction.argval, None))
    return found


def _in_test_tree(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return (isinstance(obj, (type, types.FunctionType))
            and (module == "tests" or module.startswith("tests.") or module == "conftest"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is None:
            continue
        seen: set[int] = set()
        names = _names_used(function, seen)
        fixture_info = getattr(item, "_fixtureinfo", None)
        for definitions in (fixture_info.name2fixturedefs.values() if fixture_info else ()):
            for definition in definitions:
                if _in_test_tree(inspect.unwrap(definition.func)):
                    names |= _names_used(definition.func, seen)
        callspec = getattr(item, "callspec", None)
        markers = {
            marker for fixture, marker in _MARKER_FIXTURES.items()
            if fixture in getattr(item, "fixturenames", ())
            # request.getfixturevalue("redis_server") in a fixture whose params say which
            or (fixture in names and (callspec is None or marker in callspec.id))
        }
        if names & _MODEL_NAMES:
            markers.add("model")
        if markers or names & _PROCESS_NAMES or item.nodeid in _MEASURED_SLOW:
            markers.add("slow")
        for marker in sorted(markers):
            item.add_marker(marker)
