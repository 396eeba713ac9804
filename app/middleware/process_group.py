"""Makes `SIGTERM` to a worker's process group drain exactly like `SIGTERM` to its main process.

Process runners (honcho, supervisors, `kill -TERM -<pgid>`) signal a whole process group.
Dramatiq's worker processes would then get SIGTERM twice (from the runner and from their main
process) and exit at once without draining. Each worker process therefore leaves the group at
boot, so only the main process hears the runner and forwards one SIGTERM. So that a worker
process never outlives its main process (SIGKILL of the host, of the group), it asks Linux to
kill it when its parent dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from dramatiq.broker import Broker
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

PR_SET_PDEATHSIG = 1


class OwnProcessGroup(Middleware):
    """Moves each worker process into its own process group, tied to its parent's life."""

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))

    def after_process_boot(self, broker: Broker) -> None:
        if not sys.platform.startswith("linux"):
            return
        parent = os.getppid()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        except (OSError, AttributeError) as error:
            self.logger.warning("Staying in the main process group: %s", error)
            return
        if os.getppid() != parent:  # the main process died before prctl took effect
            os._exit(1)
        os.setpgid(0, 0)
