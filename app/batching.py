"""Coalescing Redis writes into few round trips.

`WriteBatcher` (the API): while one write is in flight, the writes of requests that arrive
meanwhile gather; they go together in the next one, one atomic Lua call (new jobs' calls of
ENQUEUE_SCRIPT merge into one). An idle API adds no delay: the first request is sent at once.

`WorkerWrites` (a worker process): the outcome records and acks of all its threads, the same
way, with acks and final outcomes sent along with the next write instead of on their own, and a
job's start sent before it runs without waiting for Redis's reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from app.connections import REDIS_DOWN_ERRORS
from app.errors import BrokerUnavailable
from app.outcomes import Command, run_commands
from app.pid import current_pid

#: Upper bound on commands in one pipeline, so a burst does not build one huge transaction.
MAX_COMMANDS_PER_FLUSH = 20_000
#: A post reads the replies of earlier units once this many wait.
MAX_UNREAD_UNITS = 32


class WriteBatcher:
    """Runs each submitted command list exactly once, batched with its concurrent neighbours."""

    def __init__(self, client: redis.asyncio.Redis, *, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._pending: list[tuple[Sequence[Command], asyncio.Future[None]]] = []
        self._flushing = False

    async def submit(self, commands: Sequence[Command]) -> None:
        """Once Redis has run `commands` (with others, in one transaction)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, future))
        if not self._flushing:
            self._flushing = True
            asyncio.create_task(self._flush_all())
        await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[Sequence[Command], asyncio.Future[None]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= MAX_COMMANDS_PER_FLUSH):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item[0])
                await self._flush(batch)
        finally:
            self._flushing = False

    async def _flush(self, batch: list[tuple[Sequence[Command], asyncio.Future[None]]]) -> None:
        # One transaction: coalesced (a request's dozen commands shrink to about two, the rest
        # shared with its neighbours) and sent as one Lua call, whose one reply is all to read.
        commands = coalesce([command for commands, _ in batch for command in commands])
        try:
            if len(commands) > 1 and any(command[0] in _SCRIPT_COMMANDS for command in commands):
                async with self.client.pipeline(transaction=True) as pipeline:
                    run_commands(pipeline, commands)
                    await asyncio.wait_for(pipeline.execute(), self.timeout_s)
            else:
                await asyncio.wait_for(run_atomically_async(self.client, commands), self.timeout_s)
        except (TimeoutError, *REDIS_DOWN_ERRORS) as error:
            failure = BrokerUnavailable(f"Redis is unavailable ({type(error).__name__}: {error})")
            failure.__cause__ = error
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except Exception as error:  # a bug or a Redis error reply: fail these requests, not the loop
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


_SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


class _Unit:
    """Commands that go to Redis together, packed by the thread that submits them: one command
    as it is (a script by its SHA1: see `WorkerWrites._load_scripts`), several in a MULTI/EXEC
    block."""

    __slots__ = ("commands", "packed", "replies", "deferred", "on_done", "on_failure", "attempts_left", "waiter",
                 "posted", "released", "script", "done", "lead", "reply", "error")  # fmt: skip

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
        self.script: str | None = commands[0][1] if len(commands) == 1 and commands[0][0] == "EVAL" else None
        if len(commands) == 1:
            self.packed, self.replies = pack([_by_sha(commands[0])]), 1
        else:
            self.packed, self.replies = pack([("MULTI",), *commands, ("EXEC",)]), len(commands) + 2
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


class WorkerWrites:
    """A worker process's Redis writes, coalesced across its threads into few round trips.

    `write` runs a unit of commands now and returns the reply of the last one; `defer` queues a
    unit that need not hold up its thread (an ack, a final outcome), sent with the next `write`
    or within `linger_s`; `post` sends one now and does not wait for its reply, which is read by
    the next exchange that waits for its own, a post once `MAX_UNREAD_UNITS` wait, or within
    `linger_s`. Units go out in the order they were submitted,
    each atomic (a single command, typically a transition's script, or a MULTI/EXEC block), on a
    connection of their own, and their replies are read without redis-py's per-call layers.
    A thread sends at once, with everything waiting, unless `lanes` round trips are already
    under way; then its unit waits and goes with the next, sent by the first of the waiting
    threads. A deferred unit that Redis does not take is tried again: `attempts` times, or until
    it goes through.
    """

    def __init__(
        self, client: redis.Redis, *, lanes: int = 1, linger_s: float = 0.002, max_pause_s: float = 2.0
    ) -> None:
        self.client = client
        self.lanes = lanes
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
            lead = self._sending < self.lanes
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
            lead = self._sending < self.lanes
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
                lead = waiting and self._sending < self.lanes and self._failures == 0
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
                lead = (bool(self._pending) or self._unread is not None) and self._sending < self.lanes
                if lead:
                    self._sending += 1
            if lead:
                self._send()
            elif self._pending or self._unread is not None:
                self._wake_flusher.set()  # sent by someone else meanwhile, or more came: look again

    def _send(self, *, post: bool = False) -> None:
        """Send what is pending (the caller holds a lane); read the replies still owed on that
        connection (a post: only once many wait), then, unless this is a post, those of this
        batch. Pass the lane on."""
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
        failure: BaseException | None = None
        # A post reads no reply of its own: its thread must not wait on Redis. It reads those of
        # earlier units once many wait (sent at least a job ago, they are there): left to the
        # flusher, which gets a lane only when one is free, they could pile up without bound.
        read_unread = not post or len(unread) >= MAX_UNREAD_UNITS
        try:
            if batch:  # empty when a waiting thread got a lane after its unit had gone with another
                connection.send_packed_command([b"".join(unit.packed for unit in batch)])
                self._release_sent(batch)
            if read_unread:
                self._read_replies(connection, unread)
            if not post:
                self._read_replies(connection, batch)
        except REDIS_DOWN_ERRORS as error:
            failure = BrokerUnavailable(f"Redis is unavailable ({type(error).__name__}: {error})")
            connection.disconnect()
        except BaseException as error:  # a bug: fail these units, keep the process going
            failure = error
            connection.disconnect()
        if failure is not None or any(isinstance(unit.error, NoScriptError) for unit in unread + batch):
            with self._lock:
                self._loaded.clear()  # Redis may have restarted (or its scripts were flushed)
        self._release_sent(batch)  # also when sending failed: such units are tried again later
        # After a post, the units whose replies are unread wait for someone to read them, unless
        # sending failed: then they are all in doubt, and tried again.
        if post and failure is None:
            settled = unread if read_unread else []
            posted = batch if read_unread else [*unread, *batch]
        else:
            settled, posted = unread + batch, []
        retry: list[_Unit] = []
        for unit in settled:
            if failure is not None and not unit.done and unit.error is None:
                unit.error = failure
            if _again(unit):
                retry.append(unit)
            else:
                self._finish(unit)
        with self._lock:
            if posted:
                self._unread = (connection, posted)
            else:
                self._connections.append(connection)
            self._failures = self._failures + 1 if retry and failure is not None else 0
            if retry:
                self._pending[:0] = retry  # first in line again, in their order
            # The lane goes to a thread waiting on a write of its own, else it is free.
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
            if unit.script is not None and unit.script not in self._loaded:
                self._loaded.add(unit.script)
                loads.append(_Unit([("SCRIPT", "LOAD", unit.script)], deferred=True, attempts=1, on_failure=_ignore))
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
                reply = reply[-1]  # EXEC's replies: the last command's
                if isinstance(reply, redis.ResponseError):
                    unit.error = reply
            unit.reply = reply
            unit.done = True


_SHAS: dict[str, str] = {}


def _by_sha(command: Command) -> Command:
    """An EVAL as EVALSHA: a few bytes instead of the script on every call."""
    if command[0] != "EVAL":
        return command
    sha = _SHAS.get(command[1])
    if sha is None:
        sha = _SHAS[command[1]] = hashlib.sha1(command[1].encode()).hexdigest()
    return ("EVALSHA", sha, *command[2:])


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in the Redis protocol, as redis-py packs them, in a fraction of its time."""
    return "".join(f"*{len(command)}\r\n{_pack_args(command)}" for command in commands).encode("latin-1")


def _pack_args(args: Sequence[Any]) -> str:
    """Arguments as Redis bulk strings, in a str of one character per byte (latin-1), so that
    pieces are joined and encoded once."""
    parts: list[str] = []
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            if not arg.isascii():
                arg = arg.encode().decode("latin-1")
        elif kind is bytes:
            arg = arg.decode("latin-1")
        elif kind is int:
            arg = str(arg)
        elif kind is float:
            arg = repr(arg)
        else:
            raise redis.DataError(f"Invalid input of type {kind.__name__!r}: convert it to str, bytes or int")
        append(f"${len(arg)}\r\n{arg}\r\n")
    return "".join(parts)


def _ignore(_: BaseException) -> None:
    """A failed SCRIPT LOAD: the calls that follow it fail too, and are tried again."""


def _again(unit: _Unit) -> bool:
    """Whether a unit that Redis did not take gets another try (and count it)."""
    if isinstance(unit.error, NoScriptError):  # Redis restarted: send the script itself
        unit.packed = pack(unit.commands)
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


#: A merged command stops growing here (Lua's unpack limit is about 8,000 values).
MAX_MERGED_ARGS = 4_000
#: Commands whose arguments after the key are a list that several calls can share.
_VARIADIC = frozenset({"HSET", "RPUSH", "LPUSH", "SADD", "SREM", "HDEL", "ZREM"})
#: Commands whose key is not their first argument, or that touch several keys.
_NOT_ONE_KEY = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO", "MULTI", "EXEC",
                          "DEL", "UNLINK", "MSET", "RENAME", "SMOVE", "LMOVE", "RPOPLPUSH"})  # fmt: skip


#: Scripts whose ARGV is a run of fixed-size blocks, one per item, and that take no KEYS: calls
#: of one such script merge into one call, as adjacent HSETs merge.
_BLOCK_SCRIPTS: set[str] = set()


def block_script(script: str) -> str:
    """Declare `script` a block script (see `coalesce`); returns it."""
    _BLOCK_SCRIPTS.add(script)
    return script


def coalesce(commands: Sequence[Command]) -> list[Command]:
    """Fewer commands with the same effect, for one MULTI/EXEC: each key's commands in their
    order, adjacent ones of one kind merged (HSET, RPUSH, ZADD, ...), HINCRBYs of one field
    summed, and a wake-up list's LPUSH/LTRIM/EXPIRE repeats folded into one of each. Keys
    keep their order of first appearance; across keys, order does not matter in a transaction.
    Calls of one block script merge into one. Otherwise, commands that are not single-key
    (scripts, DEL, ...) leave the list as it is."""
    if commands and commands[0][0] == "EVAL" and commands[0][1] in _BLOCK_SCRIPTS:
        script = commands[0][1]
        if all(command[0] == "EVAL" and command[1] == script for command in commands):
            merged: list[Any] = ["EVAL", script, 0]
            for command in commands:
                merged += command[3:]
            return [tuple(merged)]
    by_key: dict[Any, list[Command]] = {}
    for command in commands:
        if command[0] in _NOT_ONE_KEY or len(command) < 2:
            return list(commands)
        by_key.setdefault(command[1], []).append(command)
    out: list[Command] = []
    for sequence in by_key.values():
        out += _fold(sequence) if len(sequence) > 1 else sequence
    return out


def _fold(sequence: list[Command]) -> list[Command]:
    names = {command[0] for command in sequence}
    if names == {"HINCRBY"}:
        totals: dict[Any, int] = {}
        for _, _, name, amount in sequence:
            totals[name] = totals.get(name, 0) + int(amount)
        key = sequence[0][1]
        return [("HINCRBY", key, name, amount) for name, amount in totals.items()]
    if names == {"LPUSH", "LTRIM", "EXPIRE"}:
        trims = {command for command in sequence if command[0] == "LTRIM"}
        expiries = {command for command in sequence if command[0] == "EXPIRE"}
        if len(trims) == 1 and len(expiries) == 1 and sequence[-1][0] != "LPUSH":
            key = sequence[0][1]
            values = [value for command in sequence if command[0] == "LPUSH" for value in command[2:]]
            ((_, _, start, stop),) = trims
            return [("LPUSH", key, *values[-(int(stop) + 1) :]), trims.pop(), expiries.pop()]
    merged: list[list[Any]] = []
    for command in sequence:
        last = merged[-1] if merged else None
        if last is not None and last[0] == command[0] and len(last) < MAX_MERGED_ARGS and _mergeable(command):
            last.extend(command[2:])
        else:
            merged.append(list(command))
    return [tuple(command) for command in merged]


def _mergeable(command: Command) -> bool:
    if command[0] in _VARIADIC:
        return True
    # ZADD without options (NX, XX, GT, CH, INCR, ...): score/member pairs only.
    return command[0] == "ZADD" and len(command) % 2 == 0 and not isinstance(command[2], str)


# Runs commands given as <argc> <arg>... in ARGV, in order, atomically: one command to send and
# one reply to read for a whole batch (a MULTI/EXEC has a reply per command, and the worker
# parses each). Commands merged by `coalesce` stay below Lua's unpack limit.
RUN_COMMANDS = """
local i = 1
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return #ARGV
"""


def run_atomically(client: redis.Redis, commands: Sequence[Command]) -> None:
    """Run commands (no scripts among them) in one atomic round trip, packed and read without
    redis-py's per-command layers. BrokerUnavailable when Redis does not answer; a Redis error
    reply is raised (the commands before the failing one have run, as in a MULTI/EXEC)."""
    start_atomically(client, commands).wait()


class Started:
    """Commands sent to Redis whose reply is yet to be read (`wait`): the caller works meanwhile."""

    def __init__(self, client: redis.Redis, commands: Sequence[Command]) -> None:
        self.pool = client.connection_pool
        self.connection: Any = None
        try:
            self.connection = self.pool.get_connection()
            self.connection.send_packed_command([_run_commands(commands)])
        except REDIS_DOWN_ERRORS as error:
            self._close(broken=True)
            raise _unavailable(error) from error

    def wait(self) -> None:
        """Until Redis has run them; BrokerUnavailable or the Redis error otherwise."""
        broken = True
        try:
            self.connection.read_response()
            broken = False
        except redis.ResponseError:
            broken = False
            raise
        except REDIS_DOWN_ERRORS as error:
            raise _unavailable(error) from error
        finally:
            self._close(broken=broken)

    def _close(self, *, broken: bool) -> None:
        if self.connection is not None:
            if broken:
                self.connection.disconnect()
            self.pool.release(self.connection)
            self.connection = None


def start_atomically(client: redis.Redis, commands: Sequence[Command]) -> Started:
    """Send commands to run atomically, as `run_atomically`, and return without waiting."""
    return Started(client, commands)


async def run_atomically_async(client: redis.asyncio.Redis, commands: Sequence[Command]) -> None:
    """`run_atomically` for the asyncio client."""
    pool = client.connection_pool
    try:
        connection = await pool.get_connection()
    except REDIS_DOWN_ERRORS as error:
        raise _unavailable(error) from error
    try:
        await connection.send_packed_command([_run_commands(commands)])
        await connection.read_response()
    except (*REDIS_DOWN_ERRORS, asyncio.CancelledError) as error:
        # Cancelled (a deadline) with the reply unread: the connection must not be reused.
        await connection.disconnect()
        if isinstance(error, asyncio.CancelledError):
            raise
        raise _unavailable(error) from error
    finally:
        await pool.release(connection)


def _run_commands(commands: Sequence[Command]) -> bytes:
    if len(commands) == 1 and commands[0][0] == "EVAL":
        return pack(commands)  # one script call (a merged block script) is sent as it is
    args: list[Any] = []
    for command in commands:
        args.append(len(command))
        args.extend(command)
    return pack([("EVAL", RUN_COMMANDS, 0, *args)])


def _unavailable(error: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"Redis is unavailable ({type(error).__name__}: {error})")
