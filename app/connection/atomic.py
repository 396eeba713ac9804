"""Running a list of commands atomically in one round trip, packed and read without redis-py's
per-command layers: one Lua call (`commands.lua`) whose one reply is all there is to read, or, when
scripts are among the commands (a script cannot call another), one MULTI/EXEC block.

Such a write must run once. A call that could not be sent (its pooled connection turned out dead
as it was written to) is sent once more on a fresh connection: Redis runs no command it did not
receive whole, and a transaction only at its EXEC. A call sent whose reply is lost is in doubt (it
may have run): it is not sent again, and the caller gets BrokerUnavailable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

from app.connection.clients import REDIS_DOWN_ERRORS, RESEND_ERRORS, unavailable
from app.connection.commands import SCRIPT_COMMANDS, Command, pack
from app.connection.scripts import RUN_COMMANDS, flatten


def run_atomically(client: redis.Redis, commands: Sequence[Command]) -> None:
    """Run commands in one atomic round trip. BrokerUnavailable when Redis does not answer; a
    Redis error reply is raised (the commands before the failing one have run, as in a MULTI/EXEC)."""
    start_atomically(client, commands).wait()


class Started:
    """Commands sent to Redis whose reply is yet to be read (`wait`): the caller works meanwhile."""

    def __init__(self, client: redis.Redis, commands: Sequence[Command]) -> None:
        self.pool = client.connection_pool
        self.connection: Any = None
        packed, self.replies = packed_call(commands)
        try:
            self._send(packed)
        except _NotSent:
            try:
                self._send(packed)  # on a fresh connection
            except _NotSent as again:
                raise unavailable(again.error) from again.error

    def _send(self, packed: bytes) -> None:
        try:
            self.connection = self.pool.get_connection()
        except REDIS_DOWN_ERRORS as error:
            raise unavailable(error) from error
        try:
            self.connection.send_packed_command([packed])
        except BaseException as error:
            self._close(broken=True)
            if isinstance(error, RESEND_ERRORS):
                raise _NotSent(error) from error
            if isinstance(error, REDIS_DOWN_ERRORS):
                raise unavailable(error) from error
            raise

    def wait(self) -> None:
        """Until Redis has run them; BrokerUnavailable or the Redis error otherwise."""
        broken = True
        try:
            replies = [_reply(self.connection.read_response) for _ in range(self.replies)]
            broken = False
        except REDIS_DOWN_ERRORS as error:
            raise unavailable(error) from error
        finally:
            self._close(broken=broken)
        _raise_first_error(replies)

    def _close(self, *, broken: bool) -> None:
        if self.connection is not None:
            if broken:
                self.connection.disconnect()
            self.pool.release(self.connection)
            self.connection = None


def start_atomically(client: redis.Redis, commands: Sequence[Command]) -> Started:
    """Send commands to run atomically, as `run_atomically`, and return without waiting."""
    return Started(client, commands)


class _NotSent(Exception):
    """The connection turned out dead as the call was written to it: nothing reached Redis."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def run_atomically_async(
    client: redis.asyncio.Redis, commands: Sequence[Command], *, wait_replicas: tuple[int, int] | None = None
) -> int | None:
    """`run_atomically` for the asyncio client. `wait_replicas` (n, timeout in ms): a WAIT follows
    on the same connection (WAIT covers the writes of its own connection), in the same round trip;
    the number of replicas that acknowledged the write is returned."""
    packed, count = packed_call(commands)
    if wait_replicas is not None:
        packed += pack([("WAIT", *wait_replicas)])
        count += 1
    try:
        replies = await _round_trip(client.connection_pool, packed, count)
    except _NotSent:
        try:
            replies = await _round_trip(client.connection_pool, packed, count)  # on a fresh connection
        except _NotSent as again:
            raise unavailable(again.error) from again.error
    acknowledged = replies.pop() if wait_replicas is not None else None
    _raise_first_error(replies)
    if isinstance(acknowledged, redis.ResponseError):
        raise acknowledged
    return None if acknowledged is None else int(acknowledged)


async def _round_trip(pool: redis.asyncio.ConnectionPool, packed: bytes, count: int) -> list[Any]:
    """The call's replies; _NotSent if it could not be sent, BrokerUnavailable if it could not run
    or its replies were lost."""
    try:
        connection = await pool.get_connection()
    except REDIS_DOWN_ERRORS as error:
        raise unavailable(error) from error
    try:
        try:
            # On any error, redis-py has closed the connection: the pool reconnects it.
            await connection.send_packed_command([packed])
        except RESEND_ERRORS as error:
            raise _NotSent(error) from error
        replies = []
        for _ in range(count):
            try:
                replies.append(await connection.read_response())
            except redis.ResponseError as error:
                replies.append(error)
        return replies
    except (*REDIS_DOWN_ERRORS, asyncio.CancelledError) as error:
        # Cancelled (a deadline) with the reply unread: the connection must not be reused.
        await connection.disconnect()
        if isinstance(error, asyncio.CancelledError):
            raise
        raise unavailable(error) from error
    finally:
        await pool.release(connection)


def _reply(read: Any) -> Any:
    """One reply read, an error reply as the error (the replies after it are still read)."""
    try:
        return read()
    except redis.ResponseError as error:
        return error


def _raise_first_error(replies: list[Any]) -> None:
    """Raise the first error among a call's replies: a script's, a command that could not be
    queued in a MULTI, or one that failed inside its EXEC."""
    transaction = replies[-1] if len(replies) > 1 and isinstance(replies[-1], list) else []
    for reply in [*replies, *transaction]:
        if isinstance(reply, redis.ResponseError):
            raise reply


def packed_call(commands: Sequence[Command]) -> tuple[bytes, int]:
    """The commands as one atomic call, packed, and how many replies it gets: one script call (a
    merged block script) as it is, several with a script among them in MULTI/EXEC, anything else
    through `commands.lua`."""
    if len(commands) == 1 and commands[0][0] == "EVAL":
        return pack(commands), 1
    if any(command[0] in SCRIPT_COMMANDS for command in commands):
        return pack([("MULTI",), *commands, ("EXEC",)]), len(commands) + 2
    return pack([("EVAL", RUN_COMMANDS, 0, *flatten(commands))]), 1
