"""Every Redis key shape, ours and Dramatiq's, spelled in one place."""

from __future__ import annotations

from dataclasses import dataclass

#: Dramatiq's own namespace: kept as is so Dramatiq's tools still see our queues.
BROKER_NAMESPACE = "dramatiq"

DELAY_SUFFIX = ".DQ"


def delay_queue(queue: str) -> str:
    """Dramatiq's name for the delayed queue of `queue`."""
    return queue + DELAY_SUFFIX


def canonical_queue(queue: str) -> str:
    """The queue a (possibly delayed) queue name belongs to."""
    return queue[: -len(DELAY_SUFFIX)] if queue.endswith(DELAY_SUFFIX) else queue


@dataclass(frozen=True)
class Keys:
    """Key names under our namespace and Dramatiq's."""

    namespace: str = "taskqueue"
    broker_namespace: str = BROKER_NAMESPACE

    # --- outcome records (ours) ---
    def job(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    @staticmethod
    def failed_job_compat(job_id: str) -> str:
        """The original system's `hgetall failedJobs:<jobId>` shape, kept for compatibility."""
        return f"failedJobs:{job_id}"

    def state_index(self, state: str, job_name: str | None = None) -> str:
        base = f"{self.namespace}:idx:{state}"
        return f"{base}:{job_name}" if job_name else base

    def all_index(self, job_name: str | None = None) -> str:
        return self.state_index("all", job_name)

    def enqueued_counts(self) -> str:
        """Hash of `<job>|<queue>` -> new jobs accepted, for taskqueue_jobs_enqueued_total."""
        return f"{self.namespace}:stats:enqueued"

    def idempotency(self, key: str) -> str:
        return f"{self.namespace}:idem:{key}"

    def cleanup_status(self) -> str:
        return f"{self.namespace}:cleanup"

    def wakeup(self, queue: str) -> str:
        """List pushed on every enqueue so that an idle consumer wakes at once."""
        return f"{self.namespace}:wakeup:{queue}"

    def workers(self) -> str:
        """Hash of broker id -> worker description, written by live worker processes."""
        return f"{self.namespace}:workers"

    # --- Dramatiq's broker keys (shapes defined by dramatiq/brokers/redis/dispatch.lua) ---
    def queue(self, queue: str) -> str:
        return f"{self.broker_namespace}:{queue}"

    def queue_messages(self, queue: str) -> str:
        return f"{self.broker_namespace}:{queue}.msgs"

    def dead_letters(self, queue: str) -> str:
        return f"{self.broker_namespace}:{canonical_queue(queue)}.XQ"

    def dead_letter_messages(self, queue: str) -> str:
        return f"{self.broker_namespace}:{canonical_queue(queue)}.XQ.msgs"

    def acks_prefix(self) -> str:
        return f"{self.broker_namespace}:__acks__."

    def acks(self, broker_id: str, queue: str) -> str:
        return f"{self.acks_prefix()}{broker_id}.{queue}"

    def heartbeats(self) -> str:
        return f"{self.broker_namespace}:__heartbeats__"
