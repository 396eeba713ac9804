"""Job types. Importing this package configures the broker and registers every module in it.

`dramatiq app.actors` and `periodiq app.actors` need nothing else. To add a job type, add one
module here that declares it with `app.jobs.job_type` (see email.py).
"""

from __future__ import annotations

import importlib
import pkgutil

import dramatiq

from app.broker import create_broker
from app.logs import configure_logging
from app.settings import Settings

# The one module-level configuration: @dramatiq.actor needs the broker at import time.
settings = Settings.from_env()
configure_logging(settings)
broker = create_broker(settings)
dramatiq.set_broker(broker)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
