"""The outcome log without processes: OutcomeRecorder on Dramatiq's StubBroker, writing through
WorkerWrites to fakeredis, and OutcomeLog's transitions on fakeredis.

Records what Redis runs: each transition must be exactly one atomic unit (one script call or
one MULTI/EXEC), in at most one round trip, and a Redis that does not answer must never fail,
lose or hold up the job itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
import fakeredis
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage

from app.connection.commands import Command
from app.connection.shards import Shards
from app.connection.worker_writes import ShardedWrites, WorkerWrites
from app.errors import PermanentJobError
from app.keys import Keys
from app.middleware.outcomes import OutcomeRecorder, worker_name
from app.middleware.retries import DurableRetries
from app.outcomes import packed
from app.outcomes.log import OutcomeLog
from app.outcomes.record import SUCCEEDED, now_ms
from tests.support.redis_state import read_record, run_multi
from tests.support.services import wait_until

KEYS = Keys()
LOG = OutcomeLog(keys=KEYS, retention_seconds=3600)
#: What runs a write as one atomic unit: a script call, or the EXEC of a MULTI/EXEC.
ATOMIC = {"EVALSHA", "EVAL", "EXEC"}
#: What else the writes' connections send: their handshake, a MULTI, a script's load.
NOT_WRITES = {"HELLO", "CLIENT SETINFO", "MULTI", "SCRIPT LOAD"}


class RecordingRedis(fakeredis.FakeRedis):
    """A client whose connections record what Redis runs for them: for each command received,
    the commands run (itself, then those run inside it: a script's, an EXEC's); and each round
    trip (one packed send)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.received: list[list[Command]] = []
        self.sends = 0
        recording = self

        class Connection(fakeredis.FakeRedisConnection):
            handshaking = False

            def on_connect_check_health(self, check_health: bool = True) -> None:
                self.handshaking = True
                try:
                    super().on_connect_check_health(check_health)
                finally:
                    self.handshaking = False

            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                if not self.handshaking:
                    recording.sends += 1
                super().send_packed_command(command, check_health)

            def _connect(self) -> Any:
                sock = super()._connect()
                process, run = sock._process_command, sock._run_command

                def process_command(fields: list[bytes]) -> None:
                    recording.received.append([])
                    process(fields)

                def run_command(func: Any, sig: Any, args: list[Any], from_script: bool) -> Any:
                    recording.received[-1].append((sig.name.upper(), *(_text(arg) for arg in args)))
                    return run(func, sig, args, from_script)

                sock._process_command, sock._run_command = process_command, run_command
                return sock

        super().__init__(*args, connection_class=Connection, **kwargs)


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class SkipFlagged(Middleware):
    """Skips messages sent with the `skip_me` option, the way periodiq skips a late tick."""

    @property
    def actor_options(self) -> set[str]:
        return {"skip_me"}

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.options.get("skip_me"):
            raise SkipMessage()


class Harness:
    def __init__(self, client: RecordingRedis, server: fakeredis.FakeServer) -> None:
        self.client = client
        self.server = server
        self.reader = fakeredis.FakeRedis(server=server)  # the test's own reads are not recorded
        self.write_errors = 0
        self.writes = WorkerWrites(client)
        self.recorder = OutcomeRecorder(
            log=LOG, writes=ShardedWrites.single(self.writes), max_crash_deliveries=3, on_write_error=self._count_error
        )
        # Retries wait 50-100 ms, so that the order of transitions is fixed (see the late-write tests below).
        self.broker = StubBroker(
            middleware=[
                SkipFlagged(),
                self.recorder,
                DurableRetries(max_retries=5, min_backoff=50, max_backoff=100, enqueue_deadline_ms=1000),
            ]
        )
        self.broker.emit_after("process_boot")
        self.calls: dict[str, int] = {}
        self.worker = dramatiq.Worker(self.broker, worker_timeout=50, worker_threads=2)

    def _count_error(self) -> None:
        self.write_errors += 1

    def actor(self, name: str, fails: int, *, error: type[Exception] = RuntimeError, **options: Any) -> Any:
        def run(job_id: str) -> None:
            self.calls[job_id] = self.calls.get(job_id, 0) + 1
            if self.calls[job_id] <= fails:
                raise error(f"attempt {self.calls[job_id]} failed")

        return dramatiq.actor(run, actor_name=name, broker=self.broker, **options)

    def run(self, actor: Any, job_id: str, **options: Any) -> None:
        message = actor.message_with_options(args=(job_id,), **options).copy(message_id=job_id)
        self.broker.enqueue(message)
        self.broker.join(actor.queue_name, fail_fast=False, timeout=10_000)
        self.worker.join()

    def record(self, job_id: str) -> dict[str, Any]:
        """The job's record, hash or packed (once it succeeded: app/outcomes/packed.py)."""
        return read_record(self.reader, KEYS, job_id)

    def transitions(self) -> list[list[Command]]:
        """The commands Redis ran for each write, once the deferred ones have landed; each write
        must be one atomic unit (a script call or an EXEC: not a command on its own), and none
        may take more than one round trip."""
        assert self.writes.flush(10), "the deferred writes to land"
        units: list[list[Command]] = []
        for ran in self.client.received:
            if not ran or ran[0][0] in NOT_WRITES:  # nothing ran: queued in a MULTI, run by its EXEC
                continue
            assert ran[0][0] in ATOMIC, self.client.received
            units.append(ran[1:])
        assert self.client.sends <= len(units), (self.client.sends, units)
        return units


@pytest.fixture
def harness() -> Iterator[Harness]:
    server = fakeredis.FakeServer()
    client = RecordingRedis(server=server)
    harness = Harness(client, server)
    harness.worker.start()
    yield harness
    harness.worker.stop()
    client.close()


def assert_transitions(harness: Harness, expected: list[str]) -> None:
    """One atomic write per transition, in this order; each enters its state's indexes (global
    and per job type) and refreshes the record's expiry, but a success, which packs the record
    into its bucket, refreshes the bucket's expiry and deletes the record's hash."""
    units = harness.transitions()
    assert [entered_state(commands) for commands in units] == expected, units
    for commands in units:
        names = [c[0] for c in commands]
        if entered_state(commands) == SUCCEEDED:
            (bucket,) = {str(c[1]) for c in commands if c[0] == "HSET"}
            assert ("EXPIRE", bucket) in [c[:2] for c in commands] and "DEL" in names, commands
        else:
            assert sum(1 for c in commands if c[0] == "ZADD" and _indexed(c)) == 2, commands
            assert "EXPIRE" in names, commands


def _indexed(command: tuple[Any, ...]) -> bool:
    return str(command[1]).startswith(KEYS.state_index(""))


def entered_state(commands: list[tuple[Any, ...]]) -> str:
    """The state a write moved the job to: the state index its ZADDs name, or `succeeded` for a
    write that packs the record into a bucket (and enters no index)."""
    prefix = KEYS.state_index("")
    states = {str(c[1])[len(prefix) :].split(":")[0] for c in commands if c[0] == "ZADD" and _indexed(c)}
    if any(c[0] == "HSET" and str(c[1]).startswith(KEYS.succeeded_bucket_prefix()) for c in commands):
        assert not states, commands
        return SUCCEEDED
    assert len(states) == 1, commands
    return states.pop()


def is_packed(harness: Harness, job_id: str) -> bool:
    """Its record packed into its bucket, with no hash and no index entry left."""
    reader = harness.reader
    indexes = [key for key in reader.keys(f"{KEYS.state_index('')}*") if reader.zscore(key, job_id) is not None]
    packed_record = reader.hexists(packed.bucket_key(KEYS, job_id), job_id)
    return bool(packed_record) and not reader.exists(KEYS.job(job_id)) and not indexes


def test_success_is_two_round_trips(harness: Harness) -> None:
    actor = harness.actor("okJob", fails=0)
    harness.run(actor, "job-ok")
    wait_until(lambda: harness.record("job-ok")["state"] == "succeeded", timeout=5, message="succeeded")
    assert_transitions(harness, ["running", "succeeded"])
    record = harness.record("job-ok")
    assert record["attempts"] == 1 and record["executions"] == 1 and record["durationMs"] is not None
    assert record["history"] is None and record["worker"] == worker_name()  # host:pid of this process
    assert is_packed(harness, "job-ok")
    assert harness.write_errors == 0


def test_each_retry_is_one_round_trip_per_transition(harness: Harness) -> None:
    actor = harness.actor("flakyJob", fails=2)
    harness.run(actor, "job-flaky")
    wait_until(lambda: harness.record("job-flaky")["state"] == "succeeded", timeout=5, message="succeeded")
    assert_transitions(harness, ["running", "retrying", "running", "retrying", "running", "succeeded"])
    record = harness.record("job-flaky")
    assert record["attempts"] == 3 and record["executions"] == 3
    assert record["error"] == "RuntimeError: attempt 2 failed"  # the last error stays visible
    assert harness.calls["job-flaky"] == 3
    # The two retried attempts, written with their retrying (no extra round trip: see above).
    history = record["history"]
    assert [(e["attempt"], e["error"], e["worker"]) for e in history] == [
        (n, f"RuntimeError: attempt {n} failed", worker_name()) for n in (1, 2)
    ]
    for e in history:
        assert e["finishedAt"] >= e["startedAt"] and e["durationMs"] >= 0 and "RuntimeError" in e["traceback"]
    assert history[0]["finishedAt"] <= history[1]["startedAt"] <= record["startedAt"]


def test_retries_spent_is_failed_with_compat_entry_in_the_same_round_trip(harness: Harness) -> None:
    actor = harness.actor("badJob", fails=100, max_retries=1)
    harness.run(actor, "job-bad")
    wait_until(lambda: harness.record("job-bad")["state"] == "failed", timeout=5, message="failed")
    assert_transitions(harness, ["running", "retrying", "running", "failed"])
    expired = [c[1] for c in harness.transitions()[-1] if c[0] == "EXPIRE"]
    # The same write, and the minute's outcome counts with it (the console's charts).
    assert expired[:2] == [KEYS.job("job-bad"), KEYS.failed_job_compat("job-bad")]
    assert [key.rpartition(":")[0] for key in expired[2:]] == [KEYS.minute_counts(0).rpartition(":")[0]]
    record = harness.record("job-bad")
    assert record["attempts"] == 2 and record["nextRetryAt"] is None
    failed = harness.reader.hgetall(KEYS.failed_job_compat("job-bad"))
    assert failed[b"jobName"] == b"badJob" and failed[b"attempts"] == b"2"
    assert failed[b"error"] == b"RuntimeError: attempt 2 failed" and failed[b"time"].endswith(b"Z")
    assert 0 < harness.reader.ttl(KEYS.failed_job_compat("job-bad")) <= 3600
    assert 0 < harness.reader.ttl(KEYS.job("job-bad")) <= 3600


def test_permanent_error_fails_at_once(harness: Harness) -> None:
    actor = harness.actor("permJob", fails=100, error=PermanentJobError, throws=(PermanentJobError,))
    harness.run(actor, "job-perm")
    wait_until(lambda: harness.record("job-perm")["state"] == "failed", timeout=5, message="failed")
    assert_transitions(harness, ["running", "failed"])
    assert harness.record("job-perm")["attempts"] == 1 and harness.calls["job-perm"] == 1


def test_skipped_is_one_round_trip(harness: Harness) -> None:
    actor = harness.actor("skipJob", fails=0)
    harness.run(actor, "job-skip", skip_me=True)
    wait_until(lambda: harness.record("job-skip")["state"] == "skipped", timeout=5, message="skipped")
    assert_transitions(harness, ["skipped"])
    assert "job-skip" not in harness.calls


def test_redis_down_for_the_log_never_fails_the_job(harness: Harness) -> None:
    ok = harness.actor("okJob", fails=0)
    flaky = harness.actor("flakyJob", fails=1)
    harness.server.connected = False  # every log write raises redis.ConnectionError
    started = now_ms()
    harness.run(ok, "job-ok")
    harness.run(flaky, "job-flaky")
    # Both ran to success (the retry was scheduled on the broker, which is not this Redis).
    assert harness.calls == {"job-ok": 1, "job-flaky": 2}
    assert harness.broker.dead_letters == []
    # Each start waits for Redis's reply, and fails: one for the first, two for the second.
    wait_until(lambda: harness.write_errors == 3, timeout=10, message="three counted write errors")
    # The final writes (succeeded; retrying, succeeded) wait for Redis behind the job, which they
    # never hold up.
    assert now_ms() - started < 10_000
    assert not harness.writes.flush(0), "the final writes wait for Redis"
    harness.server.connected = True
    # Back: they land, in order, each counting the execution its start could not.
    assert harness.writes.flush(20), "the final writes to land"
    record = harness.record("job-ok")
    assert record["state"] == "succeeded" and record["attempts"] == 1 and record["executions"] == 1
    record = harness.record("job-flaky")
    assert record["state"] == "succeeded" and record["attempts"] == 2 and record["executions"] == 2
    assert record["error"] == "RuntimeError: attempt 1 failed" and record["nextRetryAt"] is None
    assert is_packed(harness, "job-ok") and is_packed(harness, "job-flaky")
    assert harness.write_errors == 3 and harness.recorder.write_errors == 3


def run(client: fakeredis.FakeRedis, *transitions: Command | Sequence[Command]) -> None:
    """Each transition in a MULTI/EXEC of its own, in order (a script call is one command)."""
    for transition in transitions:
        run_multi(client, [transition] if isinstance(transition, tuple) else transition)


IDS = {"job_id": "j1", "job_name": "flakyJob"}


def late_retrying(attempt: int, at_ms: int) -> Command:
    return LOG.retrying(
        attempt=attempt, error="E", traceback="T", next_retry_at_ms=at_ms + 100, duration_ms=3, at_ms=at_ms,
        started_at_ms=at_ms - 3, worker="host-1:42", **IDS,
    )  # fmt: skip


def test_a_late_retrying_does_not_roll_back_a_finished_job() -> None:
    """Seen with a Redis restart: attempt 1's ack waits for Redis (Dramatiq tries again every
    5 s) while its retry already ran and succeeded; its `retrying` is written last."""
    client = fakeredis.FakeRedis()
    run(
        client,
        LOG.running(queue="default", attempt=1, at_ms=1_000, **IDS),
        LOG.running(queue="default", attempt=2, at_ms=2_000, **IDS),
        LOG.succeeded(duration_ms=5, at_ms=2_005, **IDS),
        late_retrying(1, 1_003),
    )
    record = read_record(client, KEYS, "j1")
    assert record["state"] == "succeeded" and record["attempts"] == 2 and record["nextRetryAt"] is None
    assert record["error"] is None and record["history"] is None  # the late attempt left nothing
    assert client.zscore(KEYS.state_index("retrying"), "j1") is None
    # Still packed: no hash made again beside it.
    assert client.hexists(packed.bucket_key(KEYS, "j1"), "j1") and not client.exists(KEYS.job("j1"))


def test_a_late_retrying_does_not_roll_back_a_later_attempt() -> None:
    client = fakeredis.FakeRedis()
    run(
        client,
        LOG.running(queue="default", attempt=1, at_ms=1_000, **IDS),
        LOG.running(queue="default", attempt=2, at_ms=2_000, **IDS),
        late_retrying(1, 1_003),
    )
    record = read_record(client, KEYS, "j1")
    assert record["state"] == "running" and record["attempts"] == 2
    assert client.zscore(KEYS.state_index("running"), "j1") is not None
    assert client.zscore(KEYS.state_index("retrying"), "j1") is None
    # The retrying of the running attempt itself is written as usual.
    run(client, late_retrying(2, 2_010))
    record = read_record(client, KEYS, "j1")
    assert record["state"] == "retrying" and record["attempts"] == 2 and record["nextRetryAt"] == 2_110
    assert record["error"] == "E" and client.hget(KEYS.job("j1"), "traceback") == b"T"
    assert client.zscore(KEYS.state_index("running"), "j1") is None
    assert client.zscore(KEYS.state_index("retrying", "flakyJob"), "j1") is not None
    assert 0 < client.ttl(KEYS.job("j1")) <= 3600


def test_success_records_its_attempt_even_if_its_running_was_never_written() -> None:
    client = fakeredis.FakeRedis()
    run(
        client,
        LOG.running(queue="default", attempt=1, at_ms=1_000, **IDS),
        late_retrying(1, 1_003),
        # running of attempt 2 lost in a Redis blink: the success counts its execution
        LOG.succeeded(duration_ms=5, at_ms=2_005, attempt=2, uncounted=True, **IDS),
    )
    record = read_record(client, KEYS, "j1")
    assert record["state"] == "succeeded" and record["attempts"] == 2 and record["executions"] == 2
    assert client.zscore(KEYS.state_index("retrying"), "j1") is None and not client.exists(KEYS.job("j1"))


def test_the_recorder_runs_its_after_hooks_after_the_retries_middleware() -> None:
    """After-hooks run in reverse order: placed before DurableRetries, the recorder sees its verdict."""
    from app.settings import Settings
    from app.worker import build_middleware

    client = fakeredis.FakeRedis()
    shards = Shards.single(client, KEYS)
    kinds = [type(m) for m in build_middleware(Settings(), shards, LOG, ShardedWrites(shards))]
    assert kinds.count(OutcomeRecorder) == 1 and kinds.count(DurableRetries) == 1
    assert kinds.index(OutcomeRecorder) < kinds.index(DurableRetries)
