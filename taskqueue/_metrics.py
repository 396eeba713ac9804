"""The service's /metrics as figures: a small parser of the Prometheus text format (so the client
needs no more than httpx) and the figures `tq queues` and `tq watch` show."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_END = re.compile(r"\s*\}")
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Sample:
    """One line of the text format: a series' name, its labels and its value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_samples(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (version 0.0.4); comments and malformed lines are skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sample = _sample(line)
        if sample is not None:
            samples.append(sample)
    return samples


def _sample(line: str) -> Sample | None:
    match = _NAME.match(line)
    if match is None:
        return None
    name, position, labels = match.group(), match.end(), {}
    if line[position : position + 1] == "{":
        position += 1
        while True:
            end = _END.match(line, position)
            if end is not None:  # `}`, also after a trailing comma
                position = end.end()
                break
            label = _LABEL.match(line, position)
            if label is None:
                return None
            labels[label.group(1)] = re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group()], label.group(2))
            position = label.end()
            if label.group(3) == "}":
                break
    parts = line[position:].split()
    if not parts:
        return None
    try:
        value = float(parts[0])  # takes NaN, +Inf and -Inf as the format writes them
    except ValueError:
        return None
    return Sample(name, labels, value)


@dataclass(frozen=True)
class QueueFigures:
    """One queue: jobs ready to run, delayed (also those waiting for a retry), failed (dead letters),
    and how long the oldest ready job has waited."""

    name: str
    ready: int = 0
    delayed: int = 0
    failed: int = 0
    oldest_age_s: float = 0.0


@dataclass(frozen=True)
class Metrics:
    """The figures of one scrape of the API's /metrics (and, if given, of the workers' /metrics).

    `enqueued` is the running total of new jobs per (job, queue); `processed` per (job, queue,
    outcome), only from worker endpoints. Rates come from two snapshots: `later.rate(earlier)`."""

    at: float
    queues: dict[str, QueueFigures] = field(default_factory=dict)
    workers_alive: int | None = None
    redis_up: bool | None = None
    enqueued: dict[tuple[str, str], float] = field(default_factory=dict)
    processed: dict[tuple[str, str, str], float] = field(default_factory=dict)
    in_progress: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], *, at: float) -> Metrics:
        depth: dict[str, dict[str, float]] = {}
        oldest: dict[str, float] = {}
        workers = redis_up = None
        enqueued: dict[tuple[str, str], float] = {}
        processed: dict[tuple[str, str, str], float] = {}
        in_progress: dict[tuple[str, str], float] = {}
        for sample in samples:
            labels, value = sample.labels, sample.value
            if math.isnan(value):
                continue
            if sample.name == "taskqueue_queue_depth":
                depth.setdefault(labels.get("queue", ""), {})[labels.get("state", "")] = value
            elif sample.name == "taskqueue_queue_oldest_job_age_seconds":
                oldest[labels.get("queue", "")] = value
            elif sample.name == "taskqueue_workers_alive":
                workers = int(value)
            elif sample.name == "taskqueue_redis_up":
                redis_up = value == 1
            elif sample.name == "taskqueue_jobs_enqueued_total":
                key = (labels.get("job", ""), labels.get("queue", ""))
                enqueued[key] = enqueued.get(key, 0.0) + value
            elif sample.name == "taskqueue_jobs_processed_total":
                outcome_key = (labels.get("job", ""), labels.get("queue", ""), labels.get("outcome", ""))
                processed[outcome_key] = processed.get(outcome_key, 0.0) + value
            elif sample.name == "taskqueue_jobs_in_progress":
                key = (labels.get("job", ""), labels.get("queue", ""))
                in_progress[key] = in_progress.get(key, 0.0) + value
        queues = {
            name: QueueFigures(
                name=name,
                ready=int(states.get("ready", 0)),
                delayed=int(states.get("delayed", 0)),
                failed=int(states.get("failed", 0)),
                oldest_age_s=oldest.get(name, 0.0),
            )
            for name, states in sorted(depth.items())
        }
        return cls(
            at=at,
            queues=queues,
            workers_alive=workers,
            redis_up=redis_up,
            enqueued=enqueued,
            processed=processed,
            in_progress=in_progress,
        )

    def merged(self, other: Metrics) -> Metrics:
        """These figures with the worker figures (processed, in progress) of `other` added."""
        processed = dict(self.processed)
        for outcome_key, value in other.processed.items():
            processed[outcome_key] = processed.get(outcome_key, 0.0) + value
        in_progress = dict(self.in_progress)
        for key, value in other.in_progress.items():
            in_progress[key] = in_progress.get(key, 0.0) + value
        return Metrics(
            at=self.at,
            queues=self.queues,
            workers_alive=self.workers_alive,
            redis_up=self.redis_up,
            enqueued=self.enqueued,
            processed=processed,
            in_progress=in_progress,
        )

    def enqueued_per_queue(self) -> dict[str, float]:
        return _per_queue(self.enqueued)

    def processed_per_queue(self, outcome: str | None = None) -> dict[str, float]:
        return _per_queue({(job, queue): v for (job, queue, o), v in self.processed.items() if outcome in (None, o)})

    def rates(self, earlier: Metrics) -> dict[str, dict[str, float]]:
        """Per queue, jobs a second since `earlier`: enqueued, and processed by outcome (those the workers report)."""
        seconds = self.at - earlier.at
        if seconds <= 0:
            return {}
        out: dict[str, dict[str, float]] = {}
        series = {"enqueued": (self.enqueued_per_queue(), earlier.enqueued_per_queue())}
        for outcome in sorted({o for _, _, o in (*self.processed, *earlier.processed)}):
            series[outcome] = (self.processed_per_queue(outcome), earlier.processed_per_queue(outcome))
        for what, (now, before) in series.items():
            for queue in set(now) | set(before):
                # A counter that went down was reset (a process restarted): count from zero.
                delta = now.get(queue, 0.0) - before.get(queue, 0.0)
                if delta < 0:
                    delta = now.get(queue, 0.0)
                out.setdefault(queue, {})[what] = delta / seconds
        return out


def _per_queue(totals: dict[tuple[str, str], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (_, queue), value in totals.items():
        out[queue] = out.get(queue, 0.0) + value
    return out
