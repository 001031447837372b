"""server/balance.py across a real fork: the table gunicorn's workers share is written by a forked child and read
by the parent (the in-process checks are tests/unit/test_balance.py)."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from server.balance import ConnectionTable


def _publish_in_child(table: ConnectionTable, index: int) -> None:
    table.write(index, 3.0, time.monotonic())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="gunicorn forks its workers")
def test_a_forked_worker_writes_where_the_others_read() -> None:
    table = ConnectionTable(seats=2)
    mine, theirs = table.seat(), table.seat()
    child = multiprocessing.get_context("fork").Process(target=_publish_in_child, args=(table, theirs.index))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert mine.should_yield(4)
    assert not mine.should_yield(3)
