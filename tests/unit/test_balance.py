"""server/balance.py in-process: the table gunicorn's workers share to spread connections."""

from __future__ import annotations

import math
import time

from server.balance import STALE_SECONDS, ConnectionTable


def test_every_worker_gets_its_own_seat_until_the_table_is_full() -> None:
    table = ConnectionTable(seats=3)
    seats = [table.seat() for _ in range(3)]
    assert sorted(seat.index for seat in seats) == [0, 1, 2]
    assert table.seat() is None
    seats[1].release()
    assert table.seat().index == 1


def test_a_worker_yields_only_to_a_live_worker_with_fewer_connections() -> None:
    table = ConnectionTable(seats=4)
    first, second, third = table.seat(), table.seat(), table.seat()
    first.publish(5)
    assert not first.should_yield(5), "alone in the table: nobody to yield to"
    second.publish(5)
    assert not first.should_yield(5), "a tie: either may accept"
    second.publish(4)
    assert first.should_yield(5)
    assert not second.should_yield(4)
    third.publish(2)
    assert second.should_yield(4)


def test_empty_stale_and_withdrawn_seats_hold_nobody_back() -> None:
    table = ConnectionTable(seats=3)
    busy, other = table.seat(), table.seat()
    busy.publish(8)
    other.publish(0)
    assert busy.should_yield(8)
    other.withdraw()  # stopping: it accepts nothing more
    assert not busy.should_yield(8)
    other.publish(0)
    assert busy.table.fewest_except(busy.index, time.monotonic() + STALE_SECONDS + 1) == math.inf
    other.release()  # exited: the master empties its seat
    assert not busy.should_yield(8)


def test_crowded_means_a_move_would_even_the_spread() -> None:
    table = ConnectionTable(seats=2)
    first, second = table.seat(), table.seat()
    first.publish(9)
    second.publish(8)
    assert not first.crowded(9), "9/8 moved is 8/9: no better"
    second.publish(7)
    assert first.crowded(9)
    assert not second.crowded(7)
