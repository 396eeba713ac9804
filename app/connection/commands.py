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


#: A merged command stops growing here (Lua's unpack limit is about 8,000 values).
MAX_MERGED_ARGS = 4_000
#: Commands whose arguments after the key are a list that several calls can share.
_VARIADIC = frozenset({"HSET", "RPUSH", "LPUSH", "SADD", "SREM", "HDEL", "ZREM"})
#: Commands whose key is not their first argument, or that touch several keys.
_NOT_ONE_KEY = SCRIPT_COMMANDS | frozenset({"MULTI", "EXEC",
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
    order, adjacent ones of one kind merged (HSET, RPUSH, ZADD, ...) and HINCRBYs of one field
    summed. Keys keep their order of first appearance; across keys, order does not matter in a
    transaction.
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
