"""Lua scripts, kept in `.lua` files beside this module (as Dramatiq keeps dispatch.lua).

A script is made of one or more files: shared functions (`wake_up.lua`, `run_commands.lua`)
come first, the script's own body last. `$NAME` placeholders are filled from Python's own
constants (state names, a block's size), so that such a fact is still spelled once.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.connection.commands import Command

LUA_DIR = Path(__file__).with_name("lua")


@functools.cache
def _read(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def lua(*files: str, **values: Any) -> str:
    """The script made of these files (names without `.lua`), in order, placeholders filled."""
    text = "\n".join(_read(name) for name in files)
    return string.Template(text).substitute({name: str(value) for name, value in values.items()})


def lua_list(values: Sequence[str]) -> str:
    """A Lua table constructor's contents for a list of strings."""
    return ", ".join(f"'{value}'" for value in values)


def flatten(commands: Sequence[Command]) -> list[Any]:
    """Commands as `run_commands.lua` takes them: each as <argc> <arg>..."""
    args: list[Any] = []
    for command in commands:
        args.append(len(command))
        args.extend(command)
    return args


#: Runs a list of commands atomically, in one call (see commands.lua).
RUN_COMMANDS = lua("run_commands", "commands")
