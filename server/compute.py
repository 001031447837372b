"""Where CPU-heavy work runs: on real threads, never on a gevent worker's event loop.

Under gunicorn's gevent worker (server/gunicorn.conf.py) one event loop per worker reads every
connection, so a silent or slow client costs a greenlet, not a thread. Anything that computes
for long on that loop would stop every other connection of the worker meanwhile: decoding an
image of the maximum size, running the model. `offload` hands such a call to gevent's pool of
real threads (`THREADS` per worker: the compute threads) and lets the loop serve others until
it returns; ONNX Runtime and Pillow release the GIL while they compute. Model (re)loads go to a
thread of their own (`offload_load`), so a hot reload neither pauses the loop nor takes a compute
thread from the requests. Until `attach` is called
(the gRPC process, tests, tools) it is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_pool: Any = None  # gevent's thread pool of this worker's loop, once attached
_load_pool: Any = None  # one more real thread for model loads, beside the compute threads
_loop_thread: int | None = None  # the OS thread that runs the loop
_native_ident: Callable[[], int] | None = None


def attach(threads: int) -> None:
    """Send offloaded calls made on this (gevent) loop to `threads` real threads (post_worker_init hook)."""
    global _pool, _load_pool, _loop_thread, _native_ident
    import gevent
    from gevent import monkey
    from gevent.threadpool import ThreadPool

    _native_ident = monkey.get_original("_thread", "get_ident")  # threading's own is per greenlet once patched
    _pool = gevent.get_hub().threadpool
    _pool.maxsize = threads
    # A hot reload builds and warms a model for seconds: on its own thread, requests keep their compute threads.
    _load_pool = ThreadPool(1)
    _loop_thread = _native_ident()


def on_loop() -> bool:
    """Whether this code runs on an attached worker's event loop (not on a compute thread, not unattached)."""
    return _native_ident is not None and _native_ident() == _loop_thread


def take_turn() -> None:
    """On the loop, before computing there: wait until the loop has served every other ready connection.

    A request computed on the loop never waits for I/O, and a keep-alive client's next request is often read
    before the answer's greenlet would block: it could keep the loop for one connection while the others wait
    (the hand-off to a compute thread gave them their turn). Off the loop, it returns at once."""
    if on_loop():
        import gevent

        gevent.idle()


def offload(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on a compute thread when called on the loop, else right here; its exception is raised here."""
    return _run(_pool, call, args)


def offload_load(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` (a model load) on the load thread when called on the loop, else right here."""
    return _run(_load_pool, call, args)


def _run(pool: Any, call: Callable[..., T], args: tuple[Any, ...]) -> T:
    if pool is None or not on_loop():
        return call(*args)
    # Caught on the thread and raised here: gevent's pool would print every exception's traceback (a 400
    # for a bad image is not an error of the server's).
    failed, value = pool.apply(_outcome, (call, args))
    if failed:
        raise value
    return value


def _outcome(call: Callable[..., T], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return False, call(*args)
    except BaseException as error:  # handed to the caller, which raises it
        return True, error
