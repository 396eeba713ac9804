"""A worker process's Redis writes: the outcome records and acks of all its threads, coalesced
into few round trips, with acks and final outcomes sent along with the next write instead of on
their own, and a job's start sent before it runs without waiting for Redis's reply."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from app.connection.clients import REDIS_DOWN_ERRORS, unavailable
from app.connection.commands import Command, by_sha, pack
from app.connection.shards import Shards
from app.errors import BrokerUnavailable
from app.keys import Keys
from app.pid import current_pid

#: A post reads the replies of earlier units once this many wait.
MAX_UNREAD_UNITS = 32
#: Round trips under way at once: one, so that units go out in the order they were submitted.
LANES = 1


class _Unit:
    """Commands that go to Redis together, packed by the thread that submits them: one command
    as it is, several in a MULTI/EXEC block; scripts by their SHA1 (see `WorkerWrites._load_scripts`)."""

    __slots__ = ("commands", "packed", "replies", "deferred", "on_done", "on_failure", "attempts_left", "waiter",
                 "posted", "released", "scripts", "done", "lead", "reply", "error")  # fmt: skip

    def __init__(
        self,
        commands: Sequence[Command],
        *,
        deferred: bool,
        on_done: Callable[[Any], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        attempts: int | None = None,
    ) -> None:
        self.commands = commands
        self.scripts = tuple(command[1] for command in commands if command[0] == "EVAL")
        self.packed = self._pack([by_sha(command) for command in commands] if self.scripts else commands)
        self.replies = 1 if len(commands) == 1 else len(commands) + 2
        self.deferred = deferred
        self.on_done = on_done
        self.on_failure = on_failure
        self.attempts_left = attempts
        self.waiter: Any = None
        #: Its thread waits only until it is sent (`released` then), not for the reply.
        self.posted = False
        self.released = False
        self.done = False
        self.lead = False
        self.reply: Any = None
        self.error: BaseException | None = None

    def pack_scripts_whole(self) -> None:
        """Send the scripts themselves next time, not their SHA1 (Redis lost them)."""
        self.packed = self._pack(self.commands)

    @staticmethod
    def _pack(commands: Sequence[Command]) -> bytes:
        return pack(commands) if len(commands) == 1 else pack([("MULTI",), *commands, ("EXEC",)])


class WorkerWrites:
    """A worker process's Redis writes, coalesced across its threads into few round trips.

    `write` runs a unit of commands now and returns the reply of the last one; `defer` queues a
    unit that need not hold up its thread (an ack, a final outcome), sent with the next `write`
    or within `linger_s`; `post` sends one now and does not wait for its reply, which is read by
    the next exchange that waits for its own, a post once `MAX_UNREAD_UNITS` wait, or within
    `linger_s`. Units go out in the order they were submitted, each atomic (a single command,
    typically a transition's script, or a MULTI/EXEC block), on a connection of their own, and
    their replies are read without redis-py's per-call layers. A thread sends at once, with
    everything waiting, unless a round trip is already under way; then its unit waits and goes
    with the next, sent by the first of the waiting threads. A deferred unit that Redis does not
    take is tried again: `attempts` times, or until it goes through.
    """

    def __init__(self, client: redis.Redis, *, linger_s: float = 0.002, max_pause_s: float = 2.0) -> None:
        self.client = client
        self.linger_s = linger_s
        self.max_pause_s = max_pause_s
        self.logger = logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._pending: list[_Unit] = []
        self._sending = 0  # round trips under way
        self._failures = 0
        self._connections: list[Any] = []  # idle ones
        # The connection of the last `post` and the units sent on it whose replies are unread:
        # the next exchange that waits for replies uses it, and reads those first.
        self._unread: tuple[Any, list[_Unit]] | None = None
        self._loaded: set[str] = set()  # scripts Redis has been given since the last connection failure
        self._wake_flusher = threading.Event()
        self._flusher: threading.Thread | None = None
        self._pid = current_pid()

    def write(self, commands: Sequence[Command]) -> Any:
        """Run `commands` as one atomic unit, with whatever else waits; the last one's reply.
        BrokerUnavailable when Redis does not answer; a Redis error reply is raised as is."""
        unit = _Unit(commands, deferred=False)
        unit.waiter = threading.Lock()
        unit.waiter.acquire()
        with self._lock:
            self._pending.append(unit)
            lead = self._sending < LANES
            if lead:
                self._sending += 1
        while not unit.done:
            if not lead:
                unit.waiter.acquire()  # released when done, or when it is this thread's turn to send
                with self._lock:
                    lead, unit.lead = unit.lead, False
            if lead:
                self._send()
                lead = False
        if unit.error is not None:
            raise unit.error
        return unit.reply

    def defer(
        self,
        commands: Sequence[Command],
        *,
        on_done: Callable[[Any], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        attempts: int | None = None,
    ) -> None:
        """Send `commands` soon, without waiting; `on_done(reply)` once Redis took them, or
        `on_failure(error)` after `attempts` failed tries (None: try until it goes through)."""
        unit = _Unit(commands, deferred=True, on_done=on_done, on_failure=on_failure, attempts=attempts)
        with self._lock:
            self._pending.append(unit)
            if self._flusher is None:
                self._start_flusher()
        if not self._wake_flusher.is_set():
            self._wake_flusher.set()

    def post(
        self,
        commands: Sequence[Command],
        *,
        on_done: Callable[[Any], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Send `commands` (with whatever waits) before returning, or, while another thread is
        sending, wait until that one or the next takes them along; never wait for the reply. For
        a write that must reach Redis before what follows may crash the process, but whose reply
        is not needed: a job's start. Tried again until it goes through, like a deferred unit."""
        unit = _Unit(commands, deferred=True, on_done=on_done, on_failure=on_failure)
        unit.posted = True
        with self._lock:
            self._pending.append(unit)
            lead = self._sending < LANES
            if lead:
                self._sending += 1
            else:
                unit.waiter = threading.Lock()
                unit.waiter.acquire()
        while not lead:
            unit.waiter.acquire()  # released once sent by another thread, or when it is this one's turn
            with self._lock:
                lead, unit.lead = unit.lead, False
            if not lead:
                return
        self._send(post=True)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every deferred unit is sent (True), or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                waiting = bool(self._pending) or self._unread is not None
                idle = not waiting and not self._sending
                lead = waiting and self._sending < LANES and self._failures == 0
                if lead:
                    self._sending += 1
            if idle:
                return True
            if lead:
                self._send()
            elif time.monotonic() > deadline:
                return False
            else:
                time.sleep(0.005)

    # ----- inside -----
    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._run_flusher, name="worker-writes", daemon=True)
        self._flusher.start()

    def _run_flusher(self) -> None:
        while True:
            self._wake_flusher.wait()
            self._wake_flusher.clear()
            failures = self._failures
            # Linger: a thread's next `write` usually comes first and takes these along.
            time.sleep(self.linger_s if failures == 0 else min(0.1 * 2**failures, self.max_pause_s))
            with self._lock:
                lead = (bool(self._pending) or self._unread is not None) and self._sending < LANES
                if lead:
                    self._sending += 1
            if lead:
                self._send()
            elif self._pending or self._unread is not None:
                self._wake_flusher.set()  # sent by someone else meanwhile, or more came: look again

    def _send(self, *, post: bool = False) -> None:
        """Send what is pending (the caller holds the lane); read the replies still owed on that
        connection (a post: only once many wait), then, unless this is a post, those of this
        batch. Pass the lane on."""
        batch, connection, unread = self._take()
        # A post reads no reply of its own: its thread must not wait on Redis. It reads those of
        # earlier units once many wait (sent at least a job ago, they are there): left to the
        # flusher, which gets the lane only when it is free, they could pile up without bound.
        read_unread = not post or len(unread) >= MAX_UNREAD_UNITS
        failure = self._exchange(connection, batch, unread if read_unread else [], read_own=not post)
        self._release_sent(batch)  # also when sending failed: such units are tried again later
        # After a post, the units whose replies are unread wait for someone to read them, unless
        # sending failed: then they are all in doubt, and tried again.
        if post and failure is None:
            settled, posted = (unread, batch) if read_unread else ([], [*unread, *batch])
        else:
            settled, posted = unread + batch, []
        self._hand_over(connection, posted, self._settle(settled, failure), failure)

    def _take(self) -> tuple[list[_Unit], Any, list[_Unit]]:
        """What is pending, and the connection to send it on with the units whose replies are
        still unread on it."""
        with self._lock:
            batch, self._pending = self._load_scripts(self._pending), []
            if self._pid != current_pid():  # a forked child: the parent's connections are not ours
                self._connections, self._unread, self._pid = [], None, current_pid()
            if self._unread is not None:
                (connection, unread), self._unread = self._unread, None
            else:
                connection, unread = (self._connections.pop() if self._connections else None), []
        if connection is None:
            connection = self.client.connection_pool.make_connection()
        return batch, connection, unread

    def _exchange(
        self, connection: Any, batch: list[_Unit], unread: list[_Unit], *, read_own: bool
    ) -> BaseException | None:
        """Send `batch`, read the replies of `unread` and (`read_own`) of `batch`; the failure, if any."""
        failure: BaseException | None = None
        try:
            if not connection.is_connected:
                # Through connect(): a sentinel-managed connection asks the sentinels where the
                # master is there. The send's own implicit connect would not (it would try the
                # default localhost:6379).
                connection.connect()
            if batch:  # empty when a waiting thread got the lane after its unit had gone with another
                connection.send_packed_command([b"".join(unit.packed for unit in batch)])
                self._release_sent(batch)
            self._read_replies(connection, unread)
            if read_own:
                self._read_replies(connection, batch)
        except REDIS_DOWN_ERRORS as error:
            failure = unavailable(error)
            connection.disconnect()
        except BaseException as error:  # a bug: fail these units, keep the process going
            failure = error
            connection.disconnect()
        if failure is not None or any(isinstance(unit.error, NoScriptError) for unit in unread + batch):
            with self._lock:
                self._loaded.clear()  # Redis may have restarted (or its scripts were flushed)
        return failure

    def _settle(self, units: list[_Unit], failure: BaseException | None) -> list[_Unit]:
        """Finish the units whose exchange is over; those to try again."""
        retry: list[_Unit] = []
        for unit in units:
            if failure is not None and not unit.done and unit.error is None:
                unit.error = failure
            if _again(unit):
                retry.append(unit)
            else:
                self._finish(unit)
        return retry

    def _hand_over(
        self, connection: Any, posted: list[_Unit], retry: list[_Unit], failure: BaseException | None
    ) -> None:
        """Keep the connection (with the posted units whose replies it owes), put the units to
        try again first in line, and pass the lane to a thread waiting on a write of its own, or
        to the flusher."""
        with self._lock:
            if posted:
                self._unread = (connection, posted)
            else:
                self._connections.append(connection)
            self._failures = self._failures + 1 if retry and failure is not None else 0
            if retry:
                self._pending[:0] = retry  # first in line again, in their order
            following = next(
                (unit for unit in self._pending if unit.waiter is not None and not unit.lead and not unit.released),
                None,
            )
            if following is None:
                self._sending -= 1
            else:
                following.lead = True
                following.waiter.release()
        if failure is not None and retry and self._failures == 1:
            self.logger.warning("Redis writes failed (%s); trying again.", failure)
        if following is None and (self._pending or posted):
            if self._flusher is None:
                with self._lock:
                    if self._flusher is None:
                        self._start_flusher()
            self._wake_flusher.set()

    def _load_scripts(self, batch: list[_Unit]) -> list[_Unit]:
        """`batch`, preceded by a SCRIPT LOAD of each script in it that Redis has not been given
        yet: every script call can then go by its SHA1 even when its reply is not waited for (a
        NOSCRIPT reply, read later, would mean a start that never reached Redis)."""
        loads: list[_Unit] = []
        for unit in batch:
            for script in unit.scripts:
                if script not in self._loaded:
                    self._loaded.add(script)
                    loads.append(_Unit([("SCRIPT", "LOAD", script)], deferred=True, attempts=1, on_failure=_ignore))
        return [*loads, *batch] if loads else batch

    def _release_sent(self, batch: list[_Unit]) -> None:
        """Let the threads that posted these units go on."""
        for unit in batch:
            if unit.posted and unit.waiter is not None and not unit.released:
                with self._lock:
                    if not unit.lead:  # else it was woken already, to send
                        unit.released = True
                        unit.waiter.release()

    def _finish(self, unit: _Unit) -> None:
        unit.done = True
        if unit.waiter is not None and not unit.posted:
            with self._lock:
                if not unit.lead:  # else it was woken already, to send
                    unit.waiter.release()
            return
        try:
            if unit.error is None:
                if unit.on_done:
                    unit.on_done(unit.reply)
            elif unit.on_failure:
                unit.on_failure(unit.error)
            else:
                self.logger.warning("A deferred Redis write failed for good: %s", unit.error)
        except Exception:
            self.logger.exception("A callback of a deferred Redis write failed.")

    @staticmethod
    def _read_replies(connection: Any, batch: list[_Unit]) -> None:
        for unit in batch:
            reply: Any = None
            for _ in range(unit.replies):
                try:
                    reply = connection.read_response(disconnect_on_error=True)
                except redis.ResponseError as error:
                    unit.error = error
            if unit.error is None and unit.replies > 1:
                # EXEC's replies: the last command's, unless one of them is an error.
                unit.error = next((item for item in reply if isinstance(item, redis.ResponseError)), None)
                reply = reply[-1]
            unit.reply = reply
            unit.done = True


def _ignore(_: BaseException) -> None:
    """A failed SCRIPT LOAD: the calls that follow it fail too, and are tried again."""


def _again(unit: _Unit) -> bool:
    """Whether a unit that Redis did not take gets another try (and count it)."""
    if isinstance(unit.error, NoScriptError):  # Redis restarted: send the script itself
        unit.pack_scripts_whole()
        unit.error, unit.done = None, False
        return True
    if not (unit.deferred and isinstance(unit.error, BrokerUnavailable)):
        return False
    if unit.attempts_left is not None:
        if unit.attempts_left <= 1:
            return False
        unit.attempts_left -= 1
    unit.error = None
    unit.done = False
    return True


class ShardedWrites:
    """A worker process's `WorkerWrites`, one per Redis it writes to: the one Redis, or, on a Redis
    Cluster, each node its queues' keyspaces are on (a unit's commands are all of one keyspace)."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards
        self._by_client: dict[int, WorkerWrites] = {}
        self._lock = threading.Lock()
        #: Without a cluster, the one (every job's writes: no routing on the per-job path).
        self._one: WorkerWrites | None = None
        if not shards.cluster:
            self._one = self.of(shards.keys)

    def of(self, keys: Keys) -> WorkerWrites:
        """The writes of the Redis that holds `keys`' keyspace."""
        if self._one is not None:
            return self._one
        client = self.shards.client(keys)
        writes = self._by_client.get(id(client))
        if writes is None:
            with self._lock:
                writes = self._by_client.setdefault(id(client), WorkerWrites(client))
        return writes

    def for_job(self, job_id: str) -> WorkerWrites:
        return self._one or self.of(self.shards.keys.for_job(job_id))

    def for_queue(self, queue: str) -> WorkerWrites:
        return self._one or self.of(self.shards.keys.for_queue(queue))

    def flush(self, timeout_s: float) -> bool:
        """Wait until every deferred unit of every Redis is sent (True), or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        return all(writes.flush(max(0.0, deadline - time.monotonic())) for writes in list(self._by_client.values()))

    @classmethod
    def single(cls, writes: WorkerWrites, keys: Keys | None = None) -> ShardedWrites:
        """The writes of one Redis, through `writes` (already made)."""
        sharded = cls(Shards.single(writes.client, keys or Keys()))
        sharded._one = sharded._by_client[id(writes.client)] = writes
        return sharded
