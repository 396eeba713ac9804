"""Every Redis key shape, ours and Dramatiq's, spelled in one place.

Lua scripts get their keys from here too: as KEYS, or, where a script must build a key from
a name it finds in Redis (a dead worker's id), as the prefix and suffix this module hands over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Dramatiq's own namespace: kept as is so Dramatiq's tools still see our queues.
BROKER_NAMESPACE = "dramatiq"

#: Dramatiq's suffixes (dramatiq/brokers/redis/dispatch.lua): the delayed queue of a queue, and
#: the dead letters of a queue.
DELAY_SUFFIX = ".DQ"
DEAD_LETTER_SUFFIX = ".XQ"
MESSAGES_SUFFIX = ".msgs"

#: Priority levels, highest first. A queue's `normal` jobs are on Dramatiq's own list of the
#: queue; `high` and `low` jobs on lists beside it (the queue's name and one of these suffixes).
PRIORITY_LEVELS = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"
LEVEL_SUFFIXES = {"high": ".high", "normal": "", "low": ".low"}
#: What a declared queue's name may not end with (the keys beside it would collide).
RESERVED_QUEUE_SUFFIXES = (DELAY_SUFFIX, DEAD_LETTER_SUFFIX, MESSAGES_SUFFIX, ".high", ".low")
#: What Lua scripts that put a job back at its level get for `$HIGH` and `$LOW` (priority_list.lua).
LEVEL_PLACEHOLDERS = {"HIGH": LEVEL_SUFFIXES["high"], "LOW": LEVEL_SUFFIXES["low"]}


def delay_queue(queue: str) -> str:
    """Dramatiq's name for the delayed queue of `queue`."""
    return queue + DELAY_SUFFIX


def canonical_queue(queue: str) -> str:
    """The queue a (possibly delayed) queue name belongs to."""
    return queue.removesuffix(DELAY_SUFFIX)


def is_delay_queue(queue: str) -> bool:
    return queue.endswith(DELAY_SUFFIX)


#: What separates a job id's time-ordered part from its queue, on Redis Cluster (app/job_ids.py).
JOB_ID_QUEUE_SEPARATOR = "-"
#: What a queue's name may not hold on Redis Cluster: its keys' hash tag is `{<queue>}`.
HASH_TAG_CHARS = ("{", "}")


#: How many hex digits come before a cluster job id's queue (app/job_ids.py).
JOB_ID_DIGITS = 32


def names_queue(job_id: str) -> bool:
    """Whether a job id is a cluster one: 32 hex digits, JOB_ID_QUEUE_SEPARATOR, its queue."""
    return len(job_id) > JOB_ID_DIGITS + 1 and job_id[JOB_ID_DIGITS] == JOB_ID_QUEUE_SEPARATOR


def queue_of_job(job_id: str) -> str:
    """The queue a cluster job id names; UnknownJobId for an id that names none."""
    if not names_queue(job_id):
        raise UnknownJobId(job_id)
    return job_id[JOB_ID_DIGITS + 1 :]


class UnknownJobId(ValueError):
    """On a Redis Cluster: a job id that names no queue, so no keyspace holds it (not one of ours)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job id {job_id!r} names no queue: on a Redis Cluster every job id ends with -<queue>")
        self.job_id = job_id


@dataclass(frozen=True)
class Keys:
    """Key names under our namespace and Dramatiq's.

    On one Redis (or a Sentinel group) every queue shares one keyspace: `for_queue` and `for_job`
    return these same keys. On a Redis Cluster (`cluster`), each queue has a keyspace of its own,
    every key in it under the queue's hash tag, so that each write of a queue (a Lua script, a
    transaction) touches one slot and different queues spread over the shards; a job's keyspace is
    found from its id alone (the id ends with its queue: app/job_ids.py)."""

    namespace: str = "taskqueue"
    broker_namespace: str = BROKER_NAMESPACE
    #: Keys per queue, under its hash tag (Redis Cluster).
    cluster: bool = False
    #: The hash tag of this keyspace, without braces (cluster only): a queue's name, or, for the
    #: root keys (what belongs to no queue: the cleanup status, the schedules' last runs), the
    #: namespace's.
    queue_tag: str = ""
    #: The namespaces before any tag (cluster only), from which every keyspace is made.
    base_namespace: str = ""
    base_broker_namespace: str = ""

    @classmethod
    def root(cls, namespace: str, *, cluster: bool = False) -> Keys:
        """The keys of a deployment (REDIS_CLUSTER: one keyspace per queue, and the root keys
        under the namespace's own tag, so that each key is found on the node of its slot)."""
        if not cluster:
            return cls(namespace=namespace)
        return cls._tagged(namespace, BROKER_NAMESPACE, namespace)

    @classmethod
    def _tagged(cls, namespace: str, broker_namespace: str, tag: str) -> Keys:
        return cls(
            namespace=f"{namespace}:{{{tag}}}",
            broker_namespace=f"{broker_namespace}:{{{tag}}}",
            cluster=True,
            queue_tag=tag,
            base_namespace=namespace,
            base_broker_namespace=broker_namespace,
        )

    def for_queue(self, queue: str) -> Keys:
        """The keyspace of a queue (its delay queue and dead letters included)."""
        if not self.cluster:
            return self
        name = canonical_queue(queue).removesuffix(DEAD_LETTER_SUFFIX)
        if name == self.queue_tag:
            return self
        return self._tagged(self.base_namespace, self.base_broker_namespace, name)

    def for_job(self, job_id: str) -> Keys:
        """The keyspace of a job, from its id (on a cluster, the queue its id ends with)."""
        if not self.cluster:
            return self
        return self.for_queue(queue_of_job(job_id))

    def root_keys(self) -> Keys:
        """The keys of what belongs to no queue (without a cluster: these same keys)."""
        if not self.cluster:
            return self
        return self.for_queue(self.base_namespace)

    def keyspaces(self, queues: Iterable[str]) -> list[Keys]:
        """The distinct keyspaces of these queues (one alone, without a cluster), in order."""
        if not self.cluster:
            return [self]
        return [self.for_queue(queue) for queue in dict.fromkeys(canonical_queue(q) for q in queues)]

    def hash_tag(self) -> str:
        """The hash tag every key of this keyspace carries ('' without a cluster)."""
        return f"{{{self.queue_tag}}}" if self.queue_tag else ""

    # --- outcome records (ours) ---
    def job_prefix(self) -> str:
        """What every job record's key starts with (the job id follows)."""
        return f"{self.namespace}:job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix() + job_id

    def failed_job_compat(self, job_id: str) -> str:
        """The original system's `hgetall failedJobs:<jobId>` shape, kept for compatibility; on a
        cluster `failedJobs:{<queue>}:<jobId>`, in its queue's slot (a job's writes touch one)."""
        tag = self.hash_tag()
        return f"failedJobs:{tag}:{job_id}" if tag else f"failedJobs:{job_id}"

    def state_index(self, state: str, job_name: str | None = None) -> str:
        base = f"{self.namespace}:idx:{state}"
        return f"{base}:{job_name}" if job_name else base

    def state_index_prefix(self, state: str) -> str:
        """What a state's per-job-type indexes start with (the job name follows)."""
        return f"{self.state_index(state)}:"

    def all_index(self, job_name: str | None = None) -> str:
        return self.state_index("all", job_name)

    # --- succeeded records, packed into buckets (app/outcomes/packed.py) ---
    def succeeded_bucket(self, bucket: int) -> str:
        """Hash of job id -> packed record of the succeeded jobs whose ids were made in one
        bucket of time (`bucket`: see packed.bucket_of)."""
        return f"{self.succeeded_bucket_prefix()}{bucket}"

    def succeeded_bucket_prefix(self) -> str:
        """What bucket keys start with (the bucket follows; the succeeded script builds them)."""
        return f"{self.namespace}:succeeded:"

    def succeeded_buckets(self) -> str:
        """Zset of the buckets that hold succeeded records: bucket -> bucket (newest last)."""
        return f"{self.namespace}:succeeded-buckets"

    def succeeded_sizes(self) -> str:
        """Hash of bucket -> how many records it holds, and TOTAL_FIELD -> how many in all."""
        return f"{self.namespace}:succeeded-sizes"

    def enqueued_counts(self) -> str:
        """Hash of `<job>|<queue>` -> new jobs accepted, for taskqueue_jobs_enqueued_total."""
        return f"{self.namespace}:stats:enqueued"

    @staticmethod
    def enqueued_count_field(job_name: str, queue: str) -> str:
        return f"{job_name}|{queue}"

    @staticmethod
    def parse_enqueued_count_field(field: str) -> tuple[str, str]:
        job_name, _, queue = field.partition("|")
        return job_name, queue

    def minute_counts(self, minute: int) -> str:
        """Hash of outcome -> how many (succeeded, retried, failed) in one minute (`minute`: ms // 60,000),
        bumped by each outcome write; the console's charts read them."""
        return f"{self.namespace}:stats:minute:{minute}"

    def console_bulk(self, operation_id: str) -> str:
        """Hash of a console bulk action's progress (what, how many done, finished or not)."""
        return f"{self.namespace}:console:bulk:{operation_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.namespace}:idem:{key}"

    def replication_fence(self) -> str:
        """A pub/sub channel no one listens to: a PUBLISH to it is replicated, so that a WAIT
        after it covers writes that another connection made before (WAIT covers its own)."""
        return f"{self.namespace}:replication-fence"

    def cleanup_status(self) -> str:
        return f"{self.namespace}:cleanup"

    def wakeup(self, queue: str) -> str:
        """List pushed on every enqueue so that an idle consumer wakes at once."""
        return f"{self.namespace}:wakeup:{queue}"

    def workers(self) -> str:
        """Hash of broker id -> worker description, written by live worker processes."""
        return f"{self.namespace}:workers"

    # --- flow control (ours) ---
    def paused(self) -> str:
        """Hash of queue -> when it was paused (ms): a queue in here hands out no job."""
        return f"{self.namespace}:paused"

    def slots(self, job_name: str) -> str:
        """Zset of the concurrency slots of a job type: redis id -> lease expiry (ms)."""
        return f"{self.namespace}:slots:{job_name}"

    def slot_waiting(self, queue: str, job_name: str) -> str:
        """List of `<level>|<redis id>` of a queue's jobs of a type that wait for a free slot."""
        return f"{self.namespace}:waiting:{queue}:{job_name}"

    def rate_window(self, job_name: str, rate_key: str = "") -> str:
        """Zset of a job type's recent starts (per rate key, if it has one): member -> time (ms)."""
        base = f"{self.namespace}:rate:{job_name}"
        return f"{base}:{rate_key}" if rate_key else base

    def throttled(self, queue: str) -> str:
        """Zset of `<level>|<redis id>` of a queue's jobs over their rate limit -> when due (ms)."""
        return f"{self.namespace}:throttled:{queue}"

    def fetch_turns(self, queue: str) -> str:
        """Counter of jobs a queue has handed out (which priority level's turn it is)."""
        return f"{self.namespace}:turns:{queue}"

    def cancel_requests(self, broker_id: str) -> str:
        """List of job ids whose cancel the worker process `broker_id` must decide."""
        return f"{self.namespace}:cancels:{broker_id}"

    def cancel_answer(self, job_id: str) -> str:
        """List a worker pushes its answer to a cancel request on (the API waits on it)."""
        return f"{self.namespace}:cancel-answer:{job_id}"

    def schedule_run(self, schedule: str, run_at_ms: int) -> str:
        """Taken (SET NX) by the one scheduler that runs `schedule` at `run_at_ms`."""
        return f"{self.namespace}:schedule:{schedule}:{run_at_ms}"

    def schedules(self) -> str:
        """Hash of schedule name -> JSON of its last run (for GET /schedules)."""
        return f"{self.namespace}:schedules"

    # --- Dramatiq's broker keys (shapes defined by dramatiq/brokers/redis/dispatch.lua) ---
    def queue(self, queue: str) -> str:
        return f"{self.broker_namespace}:{queue}"

    def priority_queue(self, queue: str, level: str = DEFAULT_PRIORITY) -> str:
        """The list of a queue's jobs of one priority level (`normal`: Dramatiq's list)."""
        return self.queue(queue) + LEVEL_SUFFIXES[level]

    def priority_queues(self, queue: str) -> list[str]:
        """A queue's lists, highest priority first."""
        return [self.priority_queue(queue, level) for level in PRIORITY_LEVELS]

    def queue_messages(self, queue: str) -> str:
        return self.queue(queue) + MESSAGES_SUFFIX

    def dead_letters(self, queue: str) -> str:
        return self.queue(canonical_queue(queue) + DEAD_LETTER_SUFFIX)

    def dead_letter_messages(self, queue: str) -> str:
        return self.dead_letters(queue) + MESSAGES_SUFFIX

    # A worker's ack set of a queue: prefix + broker id + suffix (a sweep builds them in Lua).
    def acks_prefix(self) -> str:
        return f"{self.broker_namespace}:__acks__."

    @staticmethod
    def acks_suffix(queue: str) -> str:
        return f".{queue}"

    def acks(self, broker_id: str, queue: str) -> str:
        return self.acks_prefix() + broker_id + self.acks_suffix(queue)

    def heartbeats(self) -> str:
        return f"{self.broker_namespace}:__heartbeats__"
