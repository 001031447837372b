"""The one per-epoch clock both training sides use, so their figures are measured alike.

Wall seconds are what a user waits; CPU seconds (this process, all its threads) are the work
done, which other jobs on a shared machine can slow down far less than they slow the wall clock.
"""

import time

import keras


class EpochClock(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(round(time.perf_counter() - self._wall, 2))
        self.cpu.append(round(time.process_time() - self._cpu, 2))
