"""Feed jobs into the queue in bulk: `python -m app.producer jobs.jsonl` (or stdin, or --generate).

Each line is `{"jobName": ..., "data": {...}}` (optionally "delayMs"), validated by the same code
as the API. Bad lines are reported with their numbers and skipped. Jobs go to Redis in
pipelined batches; while Redis is down a batch is retried until --retry-for runs out, then its
lines are reported as not enqueued and the producer goes on with the next batch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

import redis

from app.broker.enqueue import JOB_REQUEST_FIELDS, Enqueuer
from app.connection.atomic import Started, start_atomically
from app.connection.clients import check_cluster_mode, make_shards
from app.connection.commands import Command, coalesce
from app.connection.shards import Shards
from app.errors import BrokerUnavailable, InvalidJobData, SettingsError, UnknownJob
from app.jobs import JobRegistry, load_job_types
from app.keys import Keys
from app.outcomes.log import OutcomeLog
from app.settings import Settings


@dataclass
class Summary:
    lines: int = 0
    enqueued: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    not_enqueued: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.invalid and not self.not_enqueued


@dataclass(frozen=True)
class _Line:
    """A valid line: its number, its job's id, the commands that enqueue it, their keyspace."""

    number: int
    job_id: str
    commands: list[Command]
    keys: Keys


@dataclass(frozen=True)
class _Sent:
    """A batch's lines of one keyspace, their one call, its client, and the call if it went out."""

    lines: list[_Line]
    commands: list[Command]
    client: redis.Redis
    started: Started | None


@dataclass
class Producer:
    """Validates lines and writes them in batches; reports through `out` and `err`."""

    enqueuer: Enqueuer
    #: The Redis of each queue's keyspace (one, without a cluster).
    shards: Shards
    batch_size: int = 500
    retry_for_s: float = 30.0
    rate: float = 0.0
    err: TextIO = sys.stderr
    ids_out: IO[str] | None = None
    progress: bool = False
    summary: Summary = field(default_factory=Summary)
    #: The batch sent and not yet waited for: one call per keyspace it spans (one, without a cluster).
    _in_flight: list[_Sent] = field(default_factory=list, init=False, repr=False)

    def run(self, lines: Iterable[tuple[int, Any]]) -> Summary:
        started = time.monotonic()
        batch: list[_Line] = []
        for number, item in lines:
            self.summary.lines += 1
            prepared = self._prepare(number, item, sequence=len(batch))
            if prepared:
                batch.append(prepared)
            if len(batch) >= self.batch_size:
                self._flush(batch, started)
                batch = []
        if batch:
            self._flush(batch, started)
        self._settle(started)
        if self.progress:
            self.err.write("\n")
        return self.summary

    def _prepare(self, number: int, item: Any, sequence: int) -> _Line | None:
        try:
            if isinstance(item, Exception):
                raise item
            if not isinstance(item, dict) or "jobName" not in item:
                raise ValueError('expected a JSON object like {"jobName": "emailJob", "data": {...}}')
            unknown = set(item) - set(JOB_REQUEST_FIELDS)
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
            message, delay = self.enqueuer.from_request({"data": {}, **item})
        except (ValueError, UnknownJob, InvalidJobData) as error:
            self.summary.invalid.append((number, str(error)))
            self.err.write(f"line {number}: skipped: {error}\n")
            return None
        stored, commands = self.enqueuer.commands(message, delay, sequence=sequence)
        return _Line(number, stored.message_id, commands, self.enqueuer.keys.for_queue(stored.queue_name))

    def _flush(self, batch: list[_Line], started: float) -> None:
        """Send a batch without waiting for it (Redis runs it while the next one is prepared),
        once the one before has gone through."""
        self._settle(started)
        by_keyspace: dict[Keys, list[_Line]] = {}
        for line in batch:
            by_keyspace.setdefault(line.keys, []).append(line)
        for keys, lines in by_keyspace.items():
            # One atomic call per keyspace (one, without a cluster): the new jobs' enqueue calls merged into one.
            commands = coalesce([command for line in lines for command in line.commands])
            client = self.shards.client(keys)
            try:
                self._in_flight.append(_Sent(lines, commands, client, start_atomically(client, commands)))
            except BrokerUnavailable:
                self._in_flight.append(_Sent(lines, commands, client, None))  # tried again in _settle

    def _settle(self, started: float) -> None:
        """Wait for the batch in flight; while Redis is down, send it again until --retry-for runs out."""
        in_flight, self._in_flight = self._in_flight, []
        for sent in in_flight:
            self._settle_one(sent, started)

    def _settle_one(self, in_flight: _Sent, started: float) -> None:
        batch, commands, client, sent = in_flight.lines, in_flight.commands, in_flight.client, in_flight.started
        deadline = time.monotonic() + self.retry_for_s
        pause = 0.2
        while True:
            try:
                (sent or start_atomically(client, commands)).wait()
                break
            except BrokerUnavailable as error:
                sent = None
                if time.monotonic() + pause > deadline:
                    for line in batch:
                        self.summary.not_enqueued.append((line.number, str(error)))
                    numbers = _ranges([line.number for line in batch])
                    self.err.write(f"lines {numbers}: NOT enqueued ({len(batch)} jobs): {error}\n")
                    return
                self.err.write(f"Redis unavailable, retrying in {pause:.1f}s: {error}\n")
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
        self.summary.enqueued += len(batch)
        if self.ids_out:
            self.ids_out.write("".join(f"{line.job_id}\n" for line in batch))
        if self.progress:
            elapsed = max(time.monotonic() - started, 1e-6)
            self.err.write(f"\renqueued {self.summary.enqueued} jobs ({self.summary.enqueued / elapsed:,.0f}/s)")
            self.err.flush()
        if self.rate:
            # Pace to the rate limit: this batch may not finish before its share of time.
            ahead = self.summary.enqueued / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def read_lines(stream: IO[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the ValueError), skipping blank lines."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as error:
            yield number, ValueError(f"not valid JSON: {error}")


def generate(registry: JobRegistry, job_name: str, count: int) -> Iterator[tuple[int, Any]]:
    """Synthetic jobs made by the job type's `example` function."""
    job_type = registry.get(job_name)
    for number in range(1, count + 1):
        yield number, {"jobName": job_name, "data": job_type.example(number)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.producer", description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default="-", help="JSON lines file, or - for stdin (default)")
    parser.add_argument("--generate", type=int, metavar="N", help="make N synthetic jobs instead of reading")
    parser.add_argument("--job", default="emailJob", help="job type for --generate (default emailJob)")
    parser.add_argument("--rate", type=float, default=0.0, help="at most this many jobs per second (default: no limit)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per pipelined write (default 500)")
    parser.add_argument("--retry-for", type=float, default=30.0, help="seconds to retry a batch while Redis is down")
    parser.add_argument("--ids-out", help="write the jobId of every enqueued job to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    if args.batch < 1 or (args.generate is not None and args.generate < 0) or args.rate < 0:
        parser.error("--batch must be >= 1, --generate and --rate >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        registry = load_job_types(settings.job_modules)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    keys = Keys.root(settings.namespace, cluster=settings.redis_cluster)
    shards = make_shards(settings, keys)
    try:
        check_cluster_mode(shards.client(keys), settings)
    except SettingsError as error:
        shards.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    log = OutcomeLog.for_settings(keys, settings)
    enqueuer = Enqueuer(registry=registry, keys=keys, log=log, settings=settings)
    ids_out = open(args.ids_out, "a") if args.ids_out else None  # noqa: SIM115 - closed below
    producer = Producer(
        enqueuer=enqueuer,
        shards=shards,
        batch_size=args.batch,
        retry_for_s=args.retry_for,
        rate=args.rate,
        ids_out=ids_out,
        progress=sys.stderr.isatty() and not args.quiet,
    )
    started = time.monotonic()
    try:
        if args.generate is not None:
            try:
                lines: Iterable[tuple[int, Any]] = generate(registry, args.job, args.generate)
            except UnknownJob as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            summary = producer.run(lines)
        elif args.file == "-":
            summary = producer.run(read_lines(sys.stdin))
        else:
            with open(args.file) as stream:
                summary = producer.run(read_lines(stream))
    finally:
        if ids_out:
            ids_out.close()
        shards.close()
    elapsed = time.monotonic() - started
    rate = summary.enqueued / elapsed if elapsed > 0 else 0.0
    print(
        f"{summary.lines} lines: {summary.enqueued} enqueued, {len(summary.invalid)} invalid (skipped), "
        f"{len(summary.not_enqueued)} not enqueued (Redis unavailable) in {elapsed:.2f}s ({rate:,.0f} jobs/s)"
    )
    if summary.not_enqueued:
        numbers = [n for n, _ in summary.not_enqueued]
        print(f"not enqueued: lines {_ranges(numbers)}", file=sys.stderr)
    return 0 if summary.ok else 1


def _ranges(numbers: list[int]) -> str:
    parts = []
    for _, group in itertools.groupby(enumerate(numbers), lambda pair: pair[1] - pair[0]):
        run = [n for _, n in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
