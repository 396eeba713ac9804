"""Running a list of commands atomically in one round trip, packed and read without redis-py's
per-command layers: one Lua call (`commands.lua`) whose one reply is all there is to read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

from app.connection.clients import REDIS_DOWN_ERRORS, unavailable
from app.connection.commands import Command, pack
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
        try:
            self.connection = self.pool.get_connection()
            self.connection.send_packed_command([packed_call(commands)])
        except REDIS_DOWN_ERRORS as error:
            self._close(broken=True)
            raise unavailable(error) from error

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
            raise unavailable(error) from error
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
        raise unavailable(error) from error
    try:
        await connection.send_packed_command([packed_call(commands)])
        await connection.read_response()
    except (*REDIS_DOWN_ERRORS, asyncio.CancelledError) as error:
        # Cancelled (a deadline) with the reply unread: the connection must not be reused.
        await connection.disconnect()
        if isinstance(error, asyncio.CancelledError):
            raise
        raise unavailable(error) from error
    finally:
        await pool.release(connection)


def packed_call(commands: Sequence[Command]) -> bytes:
    """The commands as one atomic call, packed: one script call (a merged block script) as it
    is, anything else through `commands.lua`."""
    if len(commands) == 1 and commands[0][0] == "EVAL":
        return pack(commands)
    return pack([("EVAL", RUN_COMMANDS, 0, *flatten(commands))])
