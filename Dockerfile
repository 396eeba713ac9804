# One image for every process of the task queue: API (default CMD), worker, scheduler, producer.
# docker-compose.yml picks the process with `command:`.

# An exact patch release, never a floating tag. For byte-for-byte reproducible builds also pin the
# digest (get it with `docker buildx imagetools inspect python:3.11.13-slim-bookworm`):
#   FROM python:3.11.13-slim-bookworm@sha256:<digest>
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Absolute (the settings' default is relative), so that a plain `docker run` of a worker works too;
# docker-compose.yml mounts a tmpfs here so that each worker replica has its own.
ENV METRICS_DIR=/tmp/taskqueue-metrics

# A fixed numeric uid, so that orchestrators can verify "runs as non-root" (runAsNonRoot).
RUN groupadd --gid 10001 taskqueue \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin taskqueue \
    && install -d -o taskqueue -g taskqueue /srv/taskqueue

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes, not on
# every edit of app/. The list is read from pyproject.toml itself (tomllib is in Python 3.11), so
# there is no second list to keep in sync.
COPY pyproject.toml /tmp/build/
# With the dependencies of the `cli` extra, so that `tq` works inside the image (docker compose
# exec api tq jobs --state failed).
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/build/pyproject.toml', 'rb'))['project']; print('\n'.join(d for d in p['dependencies'] + p['optional-dependencies']['client'] + p['optional-dependencies']['cli'] if not d.startswith('taskqueue')))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code, installed without dependencies (they are above). README.md is needed: pyproject.toml
# names it as the package's readme.
COPY README.md /tmp/build/
COPY app /tmp/build/app
COPY taskqueue /tmp/build/taskqueue
RUN pip install --no-deps /tmp/build && rm -rf /tmp/build

# Writable by the app user: relative paths of the settings (var/mail/outbox.mbox) land here.
WORKDIR /srv/taskqueue
# uvicorn's logging with the filter that keeps keys sent in a query string out of the access log
# (app/api/access_log.py); the API's command passes it with --log-config, relative to this directory.
COPY deploy/uvicorn-logging.json /srv/taskqueue/deploy/uvicorn-logging.json
# The recurring jobs (SCHEDULES_FILE, relative to this directory), read by every process at start;
# mount another file over it, or set SCHEDULES_FILE, to change them.
COPY schedules.toml /srv/taskqueue/schedules.toml
USER 10001:10001

EXPOSE 3002 9191

# No HEALTHCHECK here: the same image runs the scheduler, which has no port. Each service's check is
# in docker-compose.yml.
#
# Exec form, so the process is PID 1 and alone receives `docker stop`'s SIGTERM: uvicorn and the
# dramatiq main process drain on it. A shell form would put /bin/sh in between and the signal would
# never reach the app.
CMD ["uvicorn", "app.http:app", "--host", "0.0.0.0", "--port", "3002", "--timeout-graceful-shutdown", "30", "--log-config", "deploy/uvicorn-logging.json"]
