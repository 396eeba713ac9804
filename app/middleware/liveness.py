"""Heartbeats and a deterministic sweep that gives a dead worker's jobs back to the queue.

Stock Dramatiq requeues a dead worker's unacked messages only when random "maintenance" fires
on that very queue (about 12 minutes on average). Here every worker process stamps its
heartbeat on a fixed interval (also while its threads are busy with long jobs) and sweeps:
any worker silent for longer than the heartbeat timeout has its unacked messages pushed back
onto their queues, on every queue, in one atomic script.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from dramatiq.broker import Broker
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from app.enqueue import WAKEUP_TOKENS, WAKEUP_TTL_SECONDS
from app.keys import Keys, delay_queue
from app.outcomes import now_ms

# ARGV: now, timeout, heartbeats, acks prefix, broker key prefix, job record prefix,
#       wake-up key prefix, wake-up tokens, wake-up ttl, queue names...
SWEEP_DEAD_WORKERS = """
local now, timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
local heartbeats, acks_prefix, queue_prefix = ARGV[3], ARGV[4], ARGV[5]
local record_prefix, wakeup_prefix = ARGV[6], ARGV[7]
local tokens, ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
local moved = 0
local dead = redis.call('ZRANGEBYSCORE', heartbeats, 0, now - timeout)
for _, worker in ipairs(dead) do
  for i = 10, #ARGV do
    local queue = ARGV[i]
    local acks = acks_prefix .. worker .. '.' .. queue
    local ids = redis.call('SMEMBERS', acks)
    for _, id in ipairs(ids) do
      local body = redis.call('HGET', queue_prefix .. queue .. '.msgs', id)
      if body then
        redis.call('RPUSH', queue_prefix .. queue, id)
        moved = moved + 1
        local ok, message = pcall(cjson.decode, body)
        if ok and type(message) == 'table' and message['message_id'] then
          local record = record_prefix .. message['message_id']
          if redis.call('EXISTS', record) == 1 then
            redis.call('HINCRBY', record, 'redeliveries', 1)
            redis.call('HSET', record, 'redeliveredAt', now)
          end
        end
      end
    end
    if #ids > 0 then
      redis.call('DEL', acks)
      redis.call('LPUSH', wakeup_prefix .. queue, 1)
      redis.call('LTRIM', wakeup_prefix .. queue, 0, tokens - 1)
      redis.call('EXPIRE', wakeup_prefix .. queue, ttl)
    end
  end
  redis.call('ZREM', heartbeats, worker)
end
return moved
"""


class Liveness(Middleware):
    """Stamps this process's heartbeat and sweeps dead workers, on a background thread."""

    def __init__(self, *, keys: Keys, client: redis.Redis, heartbeat_timeout_ms: int) -> None:
        self.logger = get_logger(__name__, type(self))
        self.keys = keys
        self.client = client
        self.timeout_ms = heartbeat_timeout_ms
        self.interval_s = max(0.1, heartbeat_timeout_ms / 4000)
        self.sweep = client.register_script(SWEEP_DEAD_WORKERS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="liveness", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # Declared dead at once: whatever this process leaves unacked (a job still running when
        # the shutdown timeout ran out) is swept back by the next live worker, not after a timeout.
        try:
            self.client.zadd(self.keys.heartbeats(), {broker.broker_id: 0})
        except redis.RedisError as error:
            self.logger.warning("Could not mark this worker stopped: %s", error)

    def _run(self, broker: Broker) -> None:
        while not self._stop.is_set():
            try:
                self.beat(broker)
                moved = self.sweep_once(broker)
                if moved:
                    self.logger.warning("Requeued %d job(s) of dead worker(s).", moved)
            except redis.RedisError as error:
                self.logger.warning("Heartbeat failed: %s", error)
            self._stop.wait(self.interval_s)

    def beat(self, broker: Broker) -> None:
        self.client.zadd(self.keys.heartbeats(), {broker.broker_id: now_ms()})

    def sweep_once(self, broker: Broker) -> int:
        queues: set[str] = set()
        for queue in broker.get_declared_queues():
            queues.update((queue, delay_queue(queue)))
        broker_prefix = self.keys.queue("")
        return int(
            self.sweep(
                args=[
                    now_ms(),
                    self.timeout_ms,
                    self.keys.heartbeats(),
                    self.keys.acks_prefix(),
                    broker_prefix,
                    self.keys.job(""),
                    self.keys.wakeup(""),
                    WAKEUP_TOKENS,
                    WAKEUP_TTL_SECONDS,
                    *sorted(queues),
                ]
            )
        )
