"""This process's id without a system call each time: it changes only at a fork.

os.getpid() is a system call, and prometheus_client's multiprocess values make one per update,
several per job: a noticeable part of a short job's cost on a virtual machine.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """os.getpid(), remembered."""
    return _pid
