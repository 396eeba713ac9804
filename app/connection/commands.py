"""Redis commands as tuples, and what is done with lists of them: packed in the Redis protocol,
queued on a pipeline, or coalesced into fewer commands with the same effect."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis

Command = tuple[Any, ...]

SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


def run_commands(pipeline: Any, commands: Sequence[Command]) -> None:
    """Queue commands on a (sync or async) redis-py pipeline."""
    for command in commands:
        pipeline.execute_command(*command)


_SHAS: dict[str, str] = {}


def by_sha(command: Command) -> Command:
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


#: Scripts whose ARGV is a run of items that take no KEYS: calls of one such script merge into
#: one call (see `coalesce`). Script -> the size of the header a call starts with (what its items
#: share), sent once for a run of calls with the same header.
_BLOCK_SCRIPTS: dict[str, int] = {}


def block_script(script: str, *, header: int = 0) -> str:
    """Declare `script` a block script whose calls start with a header of `header` values (see
    `coalesce`); returns it."""
    _BLOCK_SCRIPTS[script] = header
    return script


def coalesce(commands: Sequence[Command]) -> list[Command]:
    """The same commands with each run of calls of one block script merged into one call, a
    header repeated from the call before left out: the new jobs of concurrent requests or of a
    bulk batch cost one call, a few arguments each. Other commands stay as they are."""
    out: list[Command] = []
    run: list[Any] | None = None  # the merged call being built
    last_header: tuple[Any, ...] = ()
    for command in commands:
        size = _BLOCK_SCRIPTS.get(command[1]) if command[0] == "EVAL" else None
        if size is not None:
            header = command[3 : 3 + size]
            if run is not None and run[1] == command[1]:
                run += command[3 + size :] if header == last_header else command[3:]
            else:
                if run is not None:
                    out.append(tuple(run))
                run = list(command)
            last_header = header
            continue
        if run is not None:
            out.append(tuple(run))
            run = None
        out.append(command)
    if run is not None:
        out.append(tuple(run))
    return out
