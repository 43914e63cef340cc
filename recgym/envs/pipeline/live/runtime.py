"""The processes of the live pipeline and the shared memory they talk through.

Three kinds of process, all started by :class:`~recgym.envs.pipeline.live.pipeline.LivePipeline`:

* the **launcher** (spawned once): a single-threaded process that has imported the stage code and
  forks a worker whenever the controller asks (:func:`launcher_main`). Forking a prepared process
  takes milliseconds, so resizing a stage does not pay an interpreter start; and the controller —
  the user's process, which may run JAX threads — never forks. The launcher reaps its workers and
  records each exit code, and takes them all down when it is told to or its parent goes away;
* the **workers** (forked by the launcher, one per allocated core): each runs one stage's loop
  (:func:`worker_main`) — take an element from the stage's input, process it, put the outputs on
  the next stage's input — and records its counters in its shared slot. A worker asked to stop
  finishes its element, passes on what it buffers, and exits;
* the **trainer** (spawned once, :func:`~recgym.envs.pipeline.live.trainer.trainer_main`).

Stages are connected by bounded queues (back-pressure: a full queue blocks its producers); the
batches past collation are bounded by the :class:`PrefetchBuffer`, whose capacity — the prefetch
depth — changes at run time. Every blocking call has a timeout, so no process waits forever on a peer that died.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from recgym.envs.pipeline.live.data import LiveSource
from recgym.envs.pipeline.live.stages import (
    STAGE_CLASSES,
    BatchStage,
    Element,
    ShuffleStage,
    StageSettings,
)
from recgym.envs.pipeline.params import NUM_STAGES, STAGES

#: Seconds a blocked worker or trainer waits before re-checking its stop flag and its parent.
POLL_S = 0.05
#: Index of the batch stage (it reserves a place in the prefetch buffer for each batch).
BATCH_STAGE = STAGES.index("batch")
#: Bytes of error text a worker can leave in its slot.
ERROR_BYTES = 2048


class SlotCounters:
    """Indices of a worker slot's cumulative float64 counters."""

    ELEMENTS = 0  # input elements processed
    SAMPLES = 1  # training samples processed (read: produced)
    BUSY_S = 2  # wall seconds inside the stage's work (time slicing included)
    WAIT_IN_S = 3  # seconds waiting for input
    WAIT_OUT_S = 4  # seconds blocked on a full output (back-pressure)
    CPU_S = 5  # the worker process's CPU seconds, all threads (pickling in the queue's feeder too)
    BUSY_SINCE = 6  # monotonic time the current element started, 0 while not processing
    SIZE = 7


class SlotState:
    """Columns of a slot's int64 state row (written by the controller and the launcher)."""

    STAGE = 0  # stage index, -1 when the slot is free
    STOP = 1  # 1 asks the worker to stop after its element
    PID = 2
    STATUS = 3  # FREE, STARTING, RUNNING or EXITED
    EXITCODE = 4  # the worker's exit code once EXITED (negative: killed by that signal)
    SIZE = 5

    FREE, STARTING, RUNNING, EXITED = 0, 1, 2, 3


class Control:
    """Indices of the shared int64 control values."""

    BATCH_SIZE = 0
    SHUFFLE_SHARE = 1  # samples of the shuffle buffer each shuffle worker holds
    SIZE = 2


class PrefetchBuffer:
    """The prefetch buffer: the batches collated and not yet taken by the trainer, at most
    ``capacity`` (the prefetch depth, changeable at run time) ahead of the one it trains on.

    The batch stage reserves a place (:meth:`reserve`) before it emits a batch; the prefetch stage
    delivers the batch, laid out (:meth:`deliver`), into the queue the trainer takes it from
    (:meth:`get`). So the depth bounds every batch past collation — in the queue to the prefetch stage, in a prefetch
    worker's hands or ready for the trainer — as the simulator's ``P`` does: at depth 0 a batch is
    collated only when the trainer waits for one (``K = P + 1`` of the model's M/M/1/K queue).

    A place is free while the reserved batches are fewer than ``capacity`` plus the trainers
    waiting for one.

    Args:
        ctx: A ``multiprocessing`` context.
        capacity: Initial capacity (>= 0).
    """

    def __init__(self, ctx, capacity: int):
        self._queue = ctx.Queue()
        self._cond = ctx.Condition(ctx.Lock())
        self._state = ctx.Array("q", 3, lock=False)  # reserved, capacity, waiting consumers
        self._state[1] = int(capacity)

    RESERVED, CAPACITY, WAITING = 0, 1, 2

    def reserve(self, timeout: float) -> bool:
        """Take a place for one batch; ``False`` if none came free within ``timeout`` seconds."""
        s = self._state
        with self._cond:
            if not self._cond.wait_for(lambda: s[self.RESERVED] < s[self.CAPACITY] + s[self.WAITING], timeout):
                return False
            s[self.RESERVED] += 1
        return True

    def deliver(self, item: Any) -> None:
        """Hand a batch whose place was reserved to the trainer."""
        self._queue.put(item)

    def get(self, timeout: float):
        """The next item, or ``None`` if none came within ``timeout`` seconds."""
        s = self._state
        with self._cond:
            s[self.WAITING] += 1
            self._cond.notify_all()
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            item = None
        with self._cond:
            s[self.WAITING] -= 1
            if item is not None:
                s[self.RESERVED] -= 1
            self._cond.notify_all()
        return item

    def set_capacity(self, capacity: int, timeout: float = 1.0) -> None:
        """Change the capacity (producers blocked on a full buffer re-check at once)."""
        if not self._cond.acquire(timeout=timeout):
            raise TimeoutError("the prefetch buffer's lock was not released: a process died holding it")
        try:
            self._state[self.CAPACITY] = int(capacity)
            self._cond.notify_all()
        finally:
            self._cond.release()

    @property
    def capacity(self) -> int:
        """The current capacity."""
        return int(self._state[self.CAPACITY])

    def buffered(self) -> int:
        """Elements put or being put and not yet taken (a snapshot)."""
        return int(self._state[self.RESERVED])

    def close(self, flush: bool = False) -> None:
        """Release this process's end; with ``flush``, first wait until what it put is in the pipe."""
        if not flush:
            self._queue.cancel_join_thread()
        self._queue.close()
        if flush:
            self._queue.join_thread()


@dataclass
class SharedState:
    """Everything the pipeline's processes share (created by the controller, inherited by all).

    Attributes:
        max_slots: Worker slots.
        slot_state: ``(max_slots, SlotState.SIZE)`` int64 (raw shared array).
        slot_counters: ``(max_slots, SlotCounters.SIZE)`` float64 (raw shared array).
        slot_errors: ``(max_slots + 1) * ERROR_BYTES`` bytes of error text (the last block is the
            trainer's, :attr:`trainer_error_slot`).
        control: :class:`Control` values.
        cursor: Position of the next chunk to read in the stream (with its lock).
        channels: The five bounded queues between stages (read->parse, ..., batch->prefetch).
        prefetch: The prefetch buffer in front of the trainer.
        trainer_counters: The trainer's float64 counters (see ``TrainerCounters``).
        trainer_stop: Non-zero tells the trainer to exit.
    """

    max_slots: int
    slot_state: Any
    slot_counters: Any
    slot_errors: Any
    control: Any
    cursor: Any
    channels: tuple
    prefetch: PrefetchBuffer
    trainer_counters: Any
    trainer_stop: Any

    @classmethod
    def create(cls, ctx, max_slots: int, channel_capacity: int, prefetch: int, trainer_counter_size: int) -> SharedState:
        """Allocate the shared memory and the queues in context ``ctx``."""
        state = ctx.Array("q", max_slots * SlotState.SIZE, lock=False)
        np.frombuffer(state, dtype=np.int64).reshape(max_slots, SlotState.SIZE)[:, SlotState.STAGE] = -1
        return cls(
            max_slots=max_slots,
            slot_state=state,
            slot_counters=ctx.Array("d", max_slots * SlotCounters.SIZE, lock=False),
            slot_errors=ctx.Array("c", (max_slots + 1) * ERROR_BYTES, lock=False),  # the last: the trainer's
            control=ctx.Array("q", Control.SIZE, lock=False),
            cursor=ctx.Value("q", 0),
            channels=tuple(ctx.Queue(maxsize=channel_capacity) for _ in range(NUM_STAGES - 1)),
            prefetch=PrefetchBuffer(ctx, prefetch),
            trainer_counters=ctx.Array("d", trainer_counter_size, lock=False),
            trainer_stop=ctx.Value("i", 0, lock=False),
        )

    @property
    def trainer_error_slot(self) -> int:
        """The error block the trainer writes to."""
        return self.max_slots

    def report_trainer_error(self, text: str) -> None:
        """What the trainer calls with its traceback before it exits."""
        self.set_error(self.trainer_error_slot, text)

    def states(self) -> np.ndarray:
        """``(max_slots, SlotState.SIZE)`` int64 view of the slot states."""
        return np.frombuffer(self.slot_state, dtype=np.int64).reshape(self.max_slots, SlotState.SIZE)

    def counters(self) -> np.ndarray:
        """``(max_slots, SlotCounters.SIZE)`` float64 view of the slot counters."""
        return np.frombuffer(self.slot_counters, dtype=np.float64).reshape(self.max_slots, SlotCounters.SIZE)

    def controls(self) -> np.ndarray:
        """int64 view of the control values."""
        return np.frombuffer(self.control, dtype=np.int64)

    def trainer(self) -> np.ndarray:
        """float64 view of the trainer's counters."""
        return np.frombuffer(self.trainer_counters, dtype=np.float64)

    def error_of(self, slot: int) -> str:
        """The error text a worker left in ``slot`` (empty if none)."""
        raw = bytes(self.slot_errors[slot * ERROR_BYTES : (slot + 1) * ERROR_BYTES])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def set_error(self, slot: int, text: str) -> None:
        """Leave ``text`` (truncated, keeping its end: the exception) in ``slot``."""
        raw = text.encode("utf-8", "replace")[-(ERROR_BYTES - 1) :]
        self.slot_errors[slot * ERROR_BYTES : slot * ERROR_BYTES + len(raw) + 1] = raw + b"\0"

    def close(self) -> None:
        """Release this process's queue ends."""
        for channel in self.channels:
            channel.cancel_join_thread()
            channel.close()
        self.prefetch.close()


@dataclass(frozen=True)
class Fault:
    """A fault to inject into one stage's workers (for testing the failure handling).

    Attributes:
        kind: ``"hang"`` (the element never finishes), ``"raise"`` (the stage raises) or
            ``"leak"`` (each element leaks ``leak_mib`` MiB that the worker keeps touching).
        stage: The stage whose workers misbehave.
        after_elements: Elements a worker processes normally first.
        leak_mib: MiB leaked per element for ``"leak"``.
    """

    kind: str
    stage: str
    after_elements: int = 0
    leak_mib: float = 64.0

    def __post_init__(self) -> None:
        if self.kind not in ("hang", "raise", "leak"):
            raise ValueError(f"Fault.kind must be 'hang', 'raise' or 'leak', got {self.kind!r}")
        if self.stage not in STAGES:
            raise ValueError(f"Fault.stage must be one of {STAGES}, got {self.stage!r}")


class InjectedFault(RuntimeError):
    """The error a ``Fault(kind="raise")`` raises inside a worker."""


def _make_stage(stage: int, slot: int, source: LiveSource, settings: StageSettings, controls: np.ndarray):
    cls = STAGE_CLASSES[stage]
    if cls is ShuffleStage:
        return cls(source, settings, worker_slot=slot, share=lambda: controls[Control.SHUFFLE_SHARE])
    if cls is BatchStage:
        return cls(source, settings, batch_size=lambda: controls[Control.BATCH_SIZE])
    return cls(source, settings)


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere
    the loops' parent checks do it, between elements)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def worker_main(slot: int, shared: SharedState, source: LiveSource, settings: StageSettings,
                fault: Fault | None) -> None:
    """One worker's loop (runs in a process forked by the launcher; see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    die_with_parent()  # even a worker stuck in an element goes with the launcher
    launcher = os.getppid()
    state = shared.states()[slot]
    c = shared.counters()[slot]
    controls = shared.controls()
    stage = int(state[SlotState.STAGE])
    impl = _make_stage(stage, slot, source, settings, controls)
    source_queue = shared.channels[stage - 1] if stage > 0 else None
    is_faulty = fault is not None and fault.stage == STAGES[stage]
    leaked = []

    def should_abort() -> bool:
        return state[SlotState.STOP] > 1 or os.getppid() != launcher

    def emit(element: Element) -> bool:
        """Pass ``element`` on, waiting while there is no room; False if told to abort meanwhile."""
        start = time.monotonic()
        try:
            if stage == NUM_STAGES - 1:
                shared.prefetch.deliver(element)  # its place was reserved when it was collated
                return True
            if stage == BATCH_STAGE:
                while not shared.prefetch.reserve(timeout=POLL_S):
                    if should_abort():
                        return False
            while True:
                try:
                    shared.channels[stage].put(element, timeout=POLL_S)
                    return True
                except queue.Full:
                    if should_abort():
                        return False
        finally:
            c[SlotCounters.WAIT_OUT_S] += time.monotonic() - start

    try:
        while not state[SlotState.STOP] and os.getppid() == launcher:
            waited = time.monotonic()
            if source_queue is None:
                with shared.cursor.get_lock():
                    item = shared.cursor.value
                    shared.cursor.value += 1
            else:
                try:
                    item = source_queue.get(timeout=POLL_S)
                except queue.Empty:
                    c[SlotCounters.WAIT_IN_S] += time.monotonic() - waited
                    continue
            began = time.monotonic()
            c[SlotCounters.WAIT_IN_S] += began - waited
            c[SlotCounters.BUSY_SINCE] = began
            if is_faulty and c[SlotCounters.ELEMENTS] >= fault.after_elements:
                if fault.kind == "hang":
                    while True:
                        time.sleep(3600)
                elif fault.kind == "raise":
                    raise InjectedFault(f"injected fault in stage {STAGES[stage]!r}")
                else:
                    block = np.ones(int(fault.leak_mib * (1 << 20)) // 8)  # touched: resident
                    leaked.append(block)
            outputs = impl.process(item)
            ended = time.monotonic()
            c[SlotCounters.BUSY_SINCE] = 0.0
            c[SlotCounters.BUSY_S] += ended - began
            c[SlotCounters.ELEMENTS] += 1
            c[SlotCounters.SAMPLES] += outputs[0].samples if source_queue is None else item.samples
            for element in outputs:
                if not emit(element):
                    break
            c[SlotCounters.CPU_S] = time.process_time()
        # Asked to stop (or orphaned): pass on what the stage still buffers, then leave.
        if os.getppid() == launcher:
            for element in impl.flush():
                if not emit(element):
                    break
        for channel in shared.channels:
            channel.close()
            channel.join_thread()  # the outputs put above reach the pipe before the process exits
        shared.prefetch.close(flush=True)
    except BaseException:
        shared.set_error(slot, traceback.format_exc())
        os._exit(1)


def pin_to_cpus(cpus) -> None:
    """Restrict this process (and what it forks or spawns later) to the CPUs ``cpus`` (Linux)."""
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))


def launcher_main(conn, shared: SharedState, source: LiveSource, settings: StageSettings,
                  fault: Fault | None, cpus=None) -> None:
    """The launcher's loop: fork workers on request, reap them, record their exit codes.

    Commands on ``conn``: ``("start", slot)`` forks a worker for the stage written in the slot
    (reply ``("started", slot, pid)``); ``("shutdown",)`` kills every worker and returns. A closed
    ``conn`` (the controller is gone) does the same.
    """
    import multiprocessing

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_to_cpus(cpus)  # the workers inherit it
    fork = multiprocessing.get_context("fork")
    controller = os.getppid()
    states = shared.states()
    workers: dict[int, Any] = {}
    try:
        while os.getppid() == controller:
            if conn.poll(POLL_S / 2):
                try:
                    command = conn.recv()
                except EOFError:
                    break
                if command[0] == "shutdown":
                    break
                slot = int(command[1])
                process = fork.Process(target=worker_main, args=(slot, shared, source, settings, fault),
                                       name=f"recgym-{STAGES[states[slot, SlotState.STAGE]]}-{slot}", daemon=True)
                process.start()
                workers[slot] = process
                states[slot, SlotState.PID] = process.pid
                states[slot, SlotState.STATUS] = SlotState.RUNNING
                conn.send(("started", slot, process.pid))
            for slot, process in list(workers.items()):
                if process.exitcode is not None:
                    states[slot, SlotState.EXITCODE] = process.exitcode
                    states[slot, SlotState.STATUS] = SlotState.EXITED
                    del workers[slot]
    finally:
        for process in workers.values():
            process.kill()
        for process in workers.values():
            process.join(timeout=5.0)
