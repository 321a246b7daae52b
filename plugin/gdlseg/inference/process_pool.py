"""Worker processes that take a batch's items one at a time, and survive each other's deaths.

:func:`map_in_workers` starts one process per device given ("spawn", as torch recommends: nothing of the
parent's threads or CUDA state is inherited). Each runs ``setup(device)`` once (loads the model) and then
``work(state, item)`` for every item the parent hands it. The parent hands the next item to whichever worker
is idle (dynamic assignment, as nnU-Net's pools do: a slow item does not hold back a share decided in
advance) and returns the results in the items' order, whatever the order in which they finished.

Each worker talks to the parent over a pipe of its own, not over a queue shared with the others: a worker
killed at any moment (the out-of-memory killer's SIGKILL) leaves no lock held and no message half-written
for anyone else; the parent reads the end of its pipe and knows at once. Failure policy:

- ``work`` raises: that item's result is a :class:`WorkerFailure` naming the exception; the worker goes on.
- A worker dies during an item: that item's result is a :class:`WorkerFailure` saying how it died (signal
  or exit code); a fresh worker takes its device while items remain (each replacement follows an item
  lost, so they are bounded by the number of items).
- ``setup`` raises (or the worker dies in it): the worker is not replaced; the others take its items. When
  no worker is left, every item not yet done fails with the reason.
- The parent is interrupted (Ctrl-C, SIGTERM turned into ``KeyboardInterrupt``): its workers are
  terminated before the exception goes on (SIGTERM, which a worker turns into ``SystemExit`` so that the
  item's ``finally`` blocks run; SIGKILL after :data:`TERMINATE_SECONDS`). Workers ignore SIGINT: the
  parent decides. A worker whose parent died ends when it next reads its pipe.

``items``, ``setup``, ``work`` and the results cross process boundaries, so they must be picklable
(top-level functions, ``functools.partial`` of them, plain data).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

logger = logging.getLogger(__name__)

TERMINATE_SECONDS = 10.0  # how long a terminated worker may take to exit before it is killed


@dataclass(frozen=True)
class WorkerFailure:
    """The result of an item no worker could give one for: ``message`` says why, ``seconds`` since the item
    was handed out (0 when it never was)."""

    message: str
    seconds: float = 0.0


def exit_description(exitcode: int | None) -> str:
    """How a process ended, for a message: ``exitcode`` as :class:`multiprocessing.Process` reports it
    (negative: killed by that signal)."""
    if exitcode is None:
        return "did not exit"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    hint = " (on Linux, usually the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
    return f"was killed by {name}{hint}"


def map_in_workers(
    items: Sequence[Any],
    setup: Callable[[str], Any],
    work: Callable[[Any, Any], Any],
    devices: Sequence[str],
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[work(state, item) for item in items]`` over one worker process per entry of ``devices`` (at most
    one per item), each with ``state = setup(device)``; see the module docstring for the failure policy.

    Args:
        items: what to hand out, in order; picklable.
        setup: run once in each worker with its device; its return value is the worker's state.
        work: run in a worker per item; its return value (picklable) is the item's result.
        devices: one worker per entry (e.g. ``["cpu", "cpu"]`` or ``["cuda:0", "cuda:1"]``).
        on_result: called in this process with ``(index, result)`` as each item finishes (completion order).

    Returns:
        The results in the items' order; a :class:`WorkerFailure` where there was none.
    """
    if not devices:
        raise ValueError("map_in_workers needs at least one device (one worker process per device).")
    pool = _Pool(items, setup, work, on_result)
    try:
        for device in list(devices)[: len(items)]:
            pool.start(device)
        pool.serve()
    finally:
        pool.stop()
    return pool.results


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    device: str
    ready: bool = False  # setup done
    leaving: bool = False  # told to stop, or its setup failed: its end is no death
    item: int | None = None  # the item it is working on
    since: float = 0.0


class _Pool:
    """The parent's side of :func:`map_in_workers`: who works on what, what is left, what came back."""

    def __init__(self, items: Sequence[Any], setup: Callable, work: Callable, on_result: Callable | None) -> None:
        self.items, self.setup, self.work, self.on_result = items, setup, work, on_result
        self.context = multiprocessing.get_context("spawn")
        self.results: list[Any] = [None] * len(items)
        self.pending = deque(range(len(items)))
        self.workers: dict[Connection, _Worker] = {}
        self.replacements_left = len(items)
        self.reason = "no worker process was left to take it"

    def start(self, device: str) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_serve, args=(theirs, self.setup, self.work, device), name=f"gdlseg-worker-{device}", daemon=True
        )
        process.start()
        theirs.close()  # the worker's end lives in the worker only: its death closes the pipe
        self.workers[ours] = _Worker(process, ours, device)

    def serve(self) -> None:
        while self.workers:
            for connection in wait(list(self.workers)):
                worker = self.workers[connection]
                try:
                    message = connection.recv()
                except (EOFError, OSError):
                    self._ended(worker)
                    continue
                self._received(worker, message)
        for index in list(self.pending):
            self._finish(index, WorkerFailure(self.reason))
        self.pending.clear()

    def _received(self, worker: _Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
        elif kind == "setup_failed":
            worker.leaving = True
            self.reason = f"no worker process could start: {message[1]}"
            logger.warning("gdlseg: the worker process on %s could not start: %s", worker.device, message[1])
            return
        else:  # ("result", index, value) or ("error", index, message)
            index, value = message[1], message[2]
            seconds = time.perf_counter() - worker.since
            self._finish(index, value if kind == "result" else WorkerFailure(value, seconds))
            worker.item = None
        self._hand_out(worker)

    def _hand_out(self, worker: _Worker) -> None:
        if not self.pending:
            worker.leaving = True
            _send(worker.connection, None)
            return
        index = self.pending.popleft()
        if _send(worker.connection, (index, self.items[index])):
            worker.item, worker.since = index, time.perf_counter()
        else:  # it died meanwhile; the end of its pipe will say so
            self.pending.appendleft(index)

    def _ended(self, worker: _Worker) -> None:
        del self.workers[worker.connection]
        worker.connection.close()
        worker.process.join()
        if worker.leaving and worker.item is None:
            return
        how = exit_description(worker.process.exitcode)
        if not worker.ready:
            self.reason = f"no worker process could start: the one on {worker.device} {how} while loading the model"
            logger.warning("gdlseg: the worker process on %s %s while loading the model", worker.device, how)
            return
        if worker.item is not None:
            seconds = time.perf_counter() - worker.since
            self._finish(worker.item, WorkerFailure(f"its worker process ({worker.device}) {how}", seconds))
        if self.pending and self.replacements_left > 0:
            self.replacements_left -= 1
            logger.warning("gdlseg: the worker process on %s %s; a new one takes its place", worker.device, how)
            self.start(worker.device)

    def _finish(self, index: int, result: Any) -> None:
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(index, result)

    def stop(self) -> None:
        """End every worker still running (after an interruption; after :meth:`serve` none is)."""
        for worker in self.workers.values():
            worker.process.terminate()
        for worker in self.workers.values():
            worker.process.join(TERMINATE_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.workers.clear()


def _send(connection: Connection, message: Any) -> bool:
    """Send ``message``; False when the worker's end is gone."""
    try:
        connection.send(message)
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
        return False
    return True


def _serve(connection: Connection, setup: Callable, work: Callable, device: str) -> None:
    """A worker process: set up, then answer each item the parent sends until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends its workers
    signal.signal(signal.SIGTERM, _leave)  # so that an item's cleanup (atomic writes' finally) runs
    try:
        state = setup(device)
    except Exception as error:  # reported to the parent, which carries on with its other workers
        connection.send(("setup_failed", _describe(error)))
        return
    connection.send(("ready",))
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        index, item = task
        try:
            reply = ("result", index, work(state, item))
        except Exception as error:  # that item fails; the worker takes the next
            reply = ("error", index, _describe(error))
        connection.send(reply)


def _leave(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
