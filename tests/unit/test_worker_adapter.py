"""server/worker.py copies gunicorn's GeventWorker.run (to keep its StreamServers): a gunicorn upgrade that
changes that method must be noticed here, not in production. The read-ahead buffer the shed check reads is
covered by test_shed_pipelined.py, over gunicorn's real parser."""

from __future__ import annotations

import hashlib
import inspect

import gunicorn
from gunicorn.workers.ggevent import GeventWorker

from server.worker import BalancedGeventWorker

# sha256 of inspect.getsource(GeventWorker.run) in the gunicorn version server/worker.py copied it from.
COPIED_FROM = "27.0.1"
RUN_SOURCE_SHA256 = "50119854ef8be38caa6e96a5978978de9c42bc0b24ac22228101399e7ef3005d"


def test_gunicorns_gevent_run_is_still_the_one_server_worker_copies() -> None:
    digest = hashlib.sha256(inspect.getsource(GeventWorker.run).encode()).hexdigest()
    assert digest == RUN_SOURCE_SHA256, (
        f"gunicorn {gunicorn.__version__} changed GeventWorker.run (copied from {COPIED_FROM}): compare it with"
        " BalancedGeventWorker.run in server/worker.py, carry the change over, then update RUN_SOURCE_SHA256")


def test_the_worker_still_subclasses_gunicorns_gevent_worker_and_its_handle() -> None:
    assert issubclass(BalancedGeventWorker, GeventWorker)
    # handle(listener, client, addr) is what the copied run() hands each accepted connection to.
    assert list(inspect.signature(GeventWorker.handle).parameters) == ["self", "listener", "client", "addr"]
