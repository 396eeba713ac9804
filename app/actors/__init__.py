"""Job types: one module each, declared with `app.jobs.job_type` (see email.py). To add a job
type, add a module here; the API, the producer, metrics and dashboards pick it up.

This package is also the worker's entry. Imported by Dramatiq's or periodiq's command line
(`dramatiq app.actors`, `periodiq app.actors`), it builds the one broker from the environment
and binds every job type to it (app/worker.py); nothing else is needed. Imported by anything
else (the API, the producer, tests: `app.jobs.load_job_types()`), it only declares.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.jobs import load_job_types

#: The command lines whose broker module this package is (`python -m dramatiq` runs __main__.py).
WORKER_COMMANDS = ("dramatiq", "periodiq")


def is_worker_command(argv: list[str]) -> bool:
    """Whether this process is Dramatiq's or periodiq's command line (the worker processes it
    forks inherit its argv)."""
    if not argv:
        return False
    program = Path(argv[0])
    return (program.parent.name if program.name == "__main__.py" else program.name) in WORKER_COMMANDS


#: The worker's broker, when imported by Dramatiq's or periodiq's command line; else None.
broker = None

if is_worker_command(sys.argv):
    from app.settings import Settings
    from app.worker import start

    _settings = Settings.from_env()
    broker = start(_settings, load_job_types(_settings.job_modules))
