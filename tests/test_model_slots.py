"""Machine-wide model slots (server/model_slots.py): the limit, first come first served, a dead holder's tickets."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from server.model_slots import ModelSlots, SlotQueueFull, from_config, usable_cores
from shared.config import Config

WAIT_SECONDS = 5


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def waiting(slots: ModelSlots) -> int:
    return slots.running_and_waiting()[1]


def test_no_more_than_slots_calls_run_at_once() -> None:
    slots = ModelSlots(2, queue_places=8)
    running, most = 0, 0
    count = threading.Lock()

    def call() -> None:
        nonlocal running, most
        with slots.hold():
            with count:
                running += 1
                most = max(most, running)
            time.sleep(0.03)
            with count:
                running -= 1

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert most == 2
    assert slots.running_and_waiting() == (0, 0)


def test_waiters_enter_in_arrival_order_and_a_newcomer_cannot_jump_the_queue() -> None:
    slots = ModelSlots(1, queue_places=8)
    entered: list[str] = []
    threads: list[threading.Thread] = []

    def call(name: str) -> None:
        with slots.hold():
            entered.append(name)

    def arrive(name: str) -> None:
        threads.append(threading.Thread(target=call, args=(name,)))
        threads[-1].start()

    with slots.hold():
        for number, name in enumerate("abcd", start=1):
            arrive(name)
            wait_for(lambda number=number: waiting(slots) == number, f"{name} to queue")
    arrive("newcomer")  # the slot is free for an instant, but "a" was woken for it first
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert entered == ["a", "b", "c", "d", "newcomer"]


def test_the_wait_is_reported() -> None:
    slots = ModelSlots(1, queue_places=4)
    waits: list[float] = []

    def call() -> None:
        with slots.hold() as waited:
            waits.append(waited)

    with slots.hold() as first_wait:
        thread = threading.Thread(target=call)
        thread.start()
        wait_for(lambda: waiting(slots) == 1, "the second call to queue")
        time.sleep(0.05)
    thread.join(WAIT_SECONDS)
    assert first_wait < 0.05 and waits[0] >= 0.05


def test_more_callers_than_queue_places_get_503_not_a_wrong_turn() -> None:
    slots = ModelSlots(1, queue_places=1)
    with slots.hold(), pytest.raises(SlotQueueFull, match="1 model calls already run or wait"), slots.hold():
        pass
    with slots.hold():  # the refused call took no ticket
        assert slots.running_and_waiting() == (1, 0)


def _hold_forever(slots: ModelSlots, holding) -> None:
    with slots.hold():
        holding.set()
        time.sleep(60)


def _start_child(slots: ModelSlots, target) -> multiprocessing.Process:
    started = multiprocessing.get_context("fork").Event()
    child = multiprocessing.get_context("fork").Process(target=target, args=(slots, started), daemon=True)
    child.start()
    return child


def _kill(child: multiprocessing.Process) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.join(WAIT_SECONDS)


def test_a_worker_killed_while_holding_a_slot_gives_it_back_when_forgotten() -> None:
    slots = ModelSlots(1, queue_places=4)
    child = _start_child(slots, _hold_forever)
    wait_for(lambda: slots.running_and_waiting() == (1, 0), "the child to hold the slot")
    _kill(child)
    assert slots.forget(child.pid) == 1
    assert slots.forget(child.pid) == 0
    assert slots.running_and_waiting() == (0, 0)
    with slots.hold() as waited:
        assert waited < 1


def _wait_forever(slots: ModelSlots, _started) -> None:
    _hold_forever(slots, threading.Event())


def test_a_worker_killed_while_waiting_keeps_neither_a_slot_nor_the_queue() -> None:
    slots = ModelSlots(1, queue_places=4)
    entered: list[str] = []
    with slots.hold():
        child = _start_child(slots, _wait_forever)
        wait_for(lambda: waiting(slots) == 1, "the child to queue")
        _kill(child)
        assert slots.forget(child.pid) == 1
        behind = threading.Thread(target=lambda: _enter_and_leave(slots, entered))
        behind.start()
        wait_for(lambda: waiting(slots) == 2, "a call to queue behind the dead one")
    behind.join(WAIT_SECONDS)
    assert entered == ["behind"]
    assert slots.running_and_waiting() == (0, 0)


def _enter_and_leave(slots: ModelSlots, entered: list[str]) -> None:
    with slots.hold():
        entered.append("behind")


def test_usable_cores_follow_a_cgroup_quota(tmp_path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core
    assert usable_cores(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (affinity + 4)} 100000\n")
    assert usable_cores(cpu_max) == affinity
    assert usable_cores(tmp_path / "missing") == affinity


def test_slots_from_config() -> None:
    assert from_config(Config(model_slots=0)) is None
    assert from_config(Config(model_slots=3, workers=2, threads=2)).slots == 3
    cores = usable_cores()
    auto = from_config(Config(inference_threads=1, workers=4, threads=3))
    assert auto is not None and auto.slots == cores and auto.queue_places == max(cores, 24)
    assert from_config(Config(inference_threads=cores + 1)).slots == 1


def test_a_worker_killed_between_its_wake_up_and_its_call_leaves_no_stray_wake_up() -> None:
    slots = ModelSlots(1, queue_places=2)  # tickets 1 and 3 share a place
    with slots.hold():  # ticket 0
        child = _start_child(slots, _wait_forever)  # ticket 1
        wait_for(lambda: waiting(slots) == 1, "the child to queue")
        os.kill(child.pid, signal.SIGSTOP)  # woken below, but never runs to take the wake-up
    _kill(child)
    assert slots.forget(child.pid) == 1
    entered: list[str] = []
    with slots.hold():  # ticket 2
        third = threading.Thread(target=_enter_and_leave, args=(slots, entered))
        third.start()  # ticket 3, in ticket 1's place: it must wait for ticket 2
        time.sleep(0.2)
        assert entered == []
    third.join(WAIT_SECONDS)
    assert entered == ["behind"]
