"""Turning accepted jobs into Dramatiq messages and the Redis commands that enqueue them.

Every way in (the API, the batch endpoint, the producer, `actor.send()` through the broker)
ends here, so a job is validated, written and counted the same way, in one round trip.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from app.batching import block_script, coalesce
from app.jobs import JobRegistry
from app.keys import Keys, canonical_queue, delay_queue
from app.outcomes import QUEUED, Command, OutcomeLog, index_score, now_ms
from app.settings import Settings

#: Dramatiq caps delays at 7 days.
MAX_DELAY_MS = 7 * 86_400_000
#: Wake-up lists are trimmed: enough tokens to wake every idle consumer, never a growing list.
WAKEUP_TOKENS = 64
WAKEUP_TTL_SECONDS = 60

# Options our broker stamps on a message the first time it is enqueued.
ENQUEUED_AT = "enqueued_at"
RUNNABLE_AT = "runnable_at"


@dataclass(frozen=True)
class Enqueuer:
    """Builds messages and their enqueue commands for registered job types."""

    registry: JobRegistry
    keys: Keys
    log: OutcomeLog
    max_retries: int
    #: What job types' schemas validate under (the webhook allow-list); None: the defaults.
    settings: Settings | None = None
    #: ENQUEUE_SCRIPT's shared arguments by (queue as stored, job name, queue): built once.
    _shared: dict[tuple[str, str, str], tuple[Any, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_settings(cls, settings: Settings, *, registry: JobRegistry, keys: Keys, log: OutcomeLog) -> Enqueuer:
        """The enqueuer of a process configured by `settings`: its retries and its schemas' checks."""
        return cls(registry=registry, keys=keys, log=log, max_retries=settings.max_retries, settings=settings)

    def message(
        self, job_name: object, data: Any, *, delay_ms: int | None = None, job_id: str | None = None
    ) -> tuple[dramatiq.Message[Any], int | None]:
        """Validate a job and make its message; UnknownJob or InvalidJobData otherwise."""
        job_type = self.registry.get(job_name)
        clean = job_type.validate(data, self.settings)
        job_id = job_id or new_job_id()
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=job_type.queue,
            actor_name=job_type.name,
            args=(job_id, clean),
            kwargs={},
            options={},
            message_id=job_id,
        )
        return message, delay_ms

    def commands(
        self,
        message: dramatiq.Message[Any],
        delay_ms: int | None,
        *,
        at_ms: int | None = None,
        sequence: int = 0,
        as_script: bool = False,
    ) -> tuple[dramatiq.Message[Any], list[Command]]:
        """The message as stored, and the commands that enqueue it (and log it when it is new).
        `as_script`: a new job as one call of ENQUEUE_SCRIPT (the same effects), which
        `coalesce` merges with its neighbours': a fraction of the arguments to pack and send."""
        at_ms = now_ms() if at_ms is None else at_ms
        is_new = ENQUEUED_AT not in message.options
        if delay_ms:
            runnable_at = at_ms + delay_ms
        else:
            # A delayed message moved to its queue became runnable at its eta, not now.
            runnable_at = int(message.options.get(RUNNABLE_AT, at_ms))
        options: dict[str, Any] = {"redis_message_id": new_redis_id(), RUNNABLE_AT: runnable_at}
        if is_new:
            options[ENQUEUED_AT] = at_ms
        queue = canonical_queue(message.queue_name)
        target = queue
        if delay_ms is not None:
            target = delay_queue(queue)
            options["eta"] = runnable_at
        # What message.copy() makes, without dataclasses.replace's cost (bulk enqueues add up).
        stored: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=target,
            actor_name=message.actor_name,
            args=message.args,
            kwargs=message.kwargs,
            options={**message.options, **options},
            message_id=message.message_id,
            message_timestamp=message.message_timestamp,
        )
        redis_id = options["redis_message_id"]
        if as_script and is_new and not message.options.get("requeue"):
            return stored, [self._script_call(stored, queue, target, redis_id, at_ms, runnable_at, delay_ms, sequence)]
        commands: list[Command] = [
            ("HSET", self.keys.queue_messages(target), redis_id, encode(stored)),
            ("RPUSH", self.keys.queue(target), redis_id),
            *wakeup_commands(self.keys, target),
        ]
        if is_new:
            commands += self.log.queued(
                job_id=message.message_id,
                job_name=message.actor_name,
                queue=queue,
                max_retries=self.max_retries_of(message),
                data_json=COMPACT_JSON.encode(job_data(message)),
                at_ms=at_ms,
                run_at_ms=runnable_at if delay_ms else None,
                sequence=sequence,
                new=not message.options.get("requeue"),
            )
        return stored, commands

    def _script_call(
        self,
        stored: dramatiq.Message[Any],
        queue: str,
        target: str,
        redis_id: str,
        at_ms: int,
        runnable_at: int,
        delay_ms: int | None,
        sequence: int,
    ) -> Command:
        job_id, job_name = stored.message_id, stored.actor_name
        shared = self._shared.get((target, job_name, queue))
        if shared is None:
            shared = self._shared[(target, job_name, queue)] = self._shared_args(target, job_name, queue)
        messages, queue_key, wakeup, indexes, counts = shared
        return (
            "EVAL", ENQUEUE_SCRIPT, 0,
            messages, queue_key, redis_id, encode(stored), *wakeup,
            self.keys.job(job_id), job_id, job_name, queue, self.max_retries_of(stored), at_ms,
            COMPACT_JSON.encode(job_data(stored)), runnable_at if delay_ms else "",
            index_score(at_ms, sequence), *indexes, *counts, self.log.retention_seconds,
        )  # fmt: skip

    def _shared_args(self, target: str, job_name: str, queue: str) -> tuple[Any, ...]:
        """The arguments of ENQUEUE_SCRIPT that all jobs of one type and queue share."""
        keys = self.keys
        indexes = (keys.state_index(QUEUED), keys.state_index(QUEUED, job_name), keys.all_index(),
                   keys.all_index(job_name))  # fmt: skip
        return (
            keys.queue_messages(target),
            keys.queue(target),
            (keys.wakeup(target), WAKEUP_TOKENS, WAKEUP_TTL_SECONDS),
            indexes,
            (keys.enqueued_counts(), f"{job_name}|{queue}"),
        )

    def commands_many(
        self, items: list[tuple[dramatiq.Message[Any], int | None]], *, at_ms: int | None = None
    ) -> tuple[list[dramatiq.Message[Any]], list[Command]]:
        """The messages as stored, and the commands that enqueue them all in one transaction:
        coalesced, so that a job costs about two commands (its record and its expiry) instead
        of a dozen (one HSET for all the bodies, one RPUSH, one ZADD per index, ...)."""
        at_ms = now_ms() if at_ms is None else at_ms
        stored: list[dramatiq.Message[Any]] = []
        commands: list[Command] = []
        for sequence, (message, delay_ms) in enumerate(items):
            one, job_commands = self.commands(message, delay_ms, at_ms=at_ms, sequence=sequence)
            stored.append(one)
            commands += job_commands
        return stored, coalesce(commands)

    def max_retries_of(self, message: dramatiq.Message[Any]) -> int:
        if "max_retries" in message.options:
            return int(message.options["max_retries"])
        try:
            actor_retries = self.registry.get(message.actor_name).actor.options.get("max_retries")
        except Exception:
            actor_retries = None
        return int(actor_retries) if actor_retries is not None else self.max_retries


_MESSAGE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
# Message.encode() builds its dict by walking the dataclass fields on every call; with the fields
# known, the dict is built directly (the same bytes). Checked here, in case Dramatiq changes them.
_FIELDS_KNOWN = tuple(f.name for f in dataclasses.fields(dramatiq.Message)) == _MESSAGE_FIELDS


#: json.dumps(value, separators=(",", ":")) builds an encoder per call; this one is built once.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def encode(message: dramatiq.Message[Any]) -> bytes:
    """`message.encode()`, for less."""
    if not _FIELDS_KNOWN:
        return message.encode()
    encoder = dramatiq.get_encoder()
    # Dramatiq's default encoder is json.dumps with these separators, encoded to UTF-8.
    encode_fields = _compact_utf8 if type(encoder) is dramatiq.JSONEncoder else encoder.encode
    return encode_fields(
        {
            "queue_name": message.queue_name,
            "actor_name": message.actor_name,
            "args": message.args,
            "kwargs": message.kwargs,
            "options": message.options,
            "message_id": message.message_id,
            "message_timestamp": message.message_timestamp,
        }
    )


def _compact_utf8(value: Any) -> bytes:
    return COMPACT_JSON.encode(value).encode("utf-8")


def wakeup_commands(keys: Keys, queue: str) -> list[Command]:
    key = keys.wakeup(queue)
    return [
        ("LPUSH", key, 1),
        ("LTRIM", key, 0, WAKEUP_TOKENS - 1),
        ("EXPIRE", key, WAKEUP_TTL_SECONDS),
    ]


#: `wakeup_commands` for Lua scripts that put messages back on a queue: `count` tokens (one
#: per message, default 1), the list trimmed to `tokens`.
WAKE_UP_LUA = """
local function wake_up(key, tokens, ttl, count)
  local pushed = {}
  for n = 1, math.min(count or 1, tokens) do pushed[n] = 1 end
  redis.call('LPUSH', key, unpack(pushed))
  redis.call('LTRIM', key, 0, tokens - 1)
  redis.call('EXPIRE', key, ttl)
end
"""


# A new job's enqueue (`Enqueuer.commands`: the message, its wake-up, and `OutcomeLog.queued`) as
# one call, with the same effects (tests/test_outcome_scripts.py checks that they agree). ARGV is
# a run of 23-value blocks, one per job, so that calls merge (`coalesce`): the message hash, the
# queue, the redis id, the body; the wake-up list, its tokens and ttl; the record, job id, job
# name, queue, max retries, at (ms), data (JSON), runAt ('' when not delayed), index score; the
# queued and all indexes (global, per job type); the enqueued counts hash and field; retention.
# Wake-up lists get one token per job, trimmed, as the coalesced command lists do. As `coalesce`
# does, what jobs share (message hash, queue, indexes, counts) is written once per key.
ENQUEUE_SCRIPT = block_script(
    WAKE_UP_LUA
    + f"""
local bodies, queues, indexes, counts, wakeups = {{}}, {{}}, {{}}, {{}}, {{}}
local function append(t, key, a, b)
  local values = t[key]
  if values == nil then
    values = {{}}
    t[key] = values
  end
  values[#values + 1] = a
  if b ~= nil then values[#values + 1] = b end
end
for i = 1, #ARGV, 23 do
  local redis_id, record, job_id, at, score = ARGV[i + 2], ARGV[i + 7], ARGV[i + 8], ARGV[i + 12], ARGV[i + 15]
  append(bodies, ARGV[i], redis_id, ARGV[i + 3])
  append(queues, ARGV[i + 1], redis_id)
  local wakeup = wakeups[ARGV[i + 4]]
  if wakeup == nil then
    wakeups[ARGV[i + 4]] = {{1, tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])}}
  else
    wakeup[1] = wakeup[1] + 1
  end
  local fields = {{'jobId', job_id, 'jobName', ARGV[i + 9], 'queue', ARGV[i + 10], 'state', '{QUEUED}',
    'maxRetries', ARGV[i + 11], 'enqueuedAt', at, 'data', ARGV[i + 13], 'attempts', 0, 'deliveries', 0,
    'updatedAt', at}}
  if ARGV[i + 14] ~= '' then
    fields[#fields + 1] = 'runAt'
    fields[#fields + 1] = ARGV[i + 14]
  end
  fields[#fields + 1] = 'executions'
  fields[#fields + 1] = 0
  redis.call('HSET', record, unpack(fields))
  redis.call('EXPIRE', record, ARGV[i + 22])
  for k = i + 16, i + 19 do
    append(indexes, ARGV[k], score, job_id)
  end
  local count = counts[ARGV[i + 20]]
  if count == nil then
    count = {{}}
    counts[ARGV[i + 20]] = count
  end
  count[ARGV[i + 21]] = (count[ARGV[i + 21]] or 0) + 1
end
-- What all the jobs share, one command per key (in chunks: Lua unpacks at most about 8,000 values).
local function write(command, t)
  for key, values in pairs(t) do
    for first = 1, #values, 2000 do
      redis.call(command, key, unpack(values, first, math.min(first + 1999, #values)))
    end
  end
end
write('HSET', bodies)
write('RPUSH', queues)
write('ZADD', indexes)
for key, fields in pairs(counts) do
  for field, n in pairs(fields) do
    redis.call('HINCRBY', key, field, n)
  end
end
for key, wakeup in pairs(wakeups) do
  wake_up(key, wakeup[2], wakeup[3], wakeup[1])
end
return #ARGV / 23
"""
)


def job_data(message: dramatiq.Message[Any] | Any) -> Any:
    """The `data` a job was sent with (our actors take `(job_id, data)`)."""
    args = message.args
    return args[1] if len(args) > 1 else {}


def new_job_id() -> str:
    """A random version-4 UUID as 32 hex digits, like uuid.uuid4().hex, for a third of its cost."""
    return f"{_uuid4_int():032x}"


def new_redis_id() -> str:
    """A random version-4 UUID in its usual form with dashes, as Dramatiq makes them."""
    digits = f"{_uuid4_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _uuid4_int() -> int:
    # As uuid.uuid4(): 122 random bits, the version (4) and the RFC 4122 variant set.
    value = int.from_bytes(os.urandom(16), "big")
    return value & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)


def check_delay(delay_ms: object) -> int | None:
    """None, or a delay in ms within Dramatiq's limit; ValueError with a reason otherwise."""
    if delay_ms is None:
        return None
    if isinstance(delay_ms, float) and delay_ms.is_integer():
        delay_ms = int(delay_ms)  # JSON has one number type: 1000.0 is the integer 1000 (as in JSON Schema)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int):
        raise ValueError("delayMs must be a whole number of milliseconds")
    if delay_ms < 0 or delay_ms > MAX_DELAY_MS:
        raise ValueError(f"delayMs must be between 0 and {MAX_DELAY_MS} (7 days)")
    return delay_ms or None
