#!/usr/bin/env python3
"""Wait until a relock lock is free, without polling and without queueing.

    RELOCK_ADDR=127.0.0.1:6380 python3 wait_free.py

relock publishes every change of a lock on the pub/sub channel
`__lock__:<name>`: `acquired <fence>`, `released <fence> <reason>`,
`contended <waiters>`, and `free` once nobody holds it, nobody waits for
it and no lock-delay is left. `wait_until_free_and_lock` subscribes to the
lock's channel *first*, then tries TRYLOCK; while the lock is busy it
sleeps until the next `free` and tries again. Subscribing before trying
means a `free` cannot slip by unseen between the try and the wait.

(A plain `LOCK name WAIT ms` also waits, in the server's FIFO queue. This
is for a worker that must not hold a place in the queue -- say one that
checks other work meanwhile, or that only wants the lock when nobody else
does.)

Needs redis-py (`pip install redis`, or Debian's python3-redis).
"""

import os
import threading
import time

import redis


class LockNotGranted(Exception):
    """The lock did not become free (and ours) within the timeout."""


def wait_until_free_and_lock(conn, name, *, ttl_ms=15000, timeout_s=30.0, on_busy=None):
    """Takes the lock `name` on `conn` as soon as it is free; returns the key.

    `conn` is the lock's own connection (a hold belongs to the connection
    that took it). Events arrive on a second connection, a redis-py PubSub,
    closed before returning. `on_busy` is called once, when the first
    TRYLOCK finds the lock held. Raises LockNotGranted after `timeout_s`.
    """
    p = conn.pubsub()
    try:
        p.subscribe(f"__lock__:{name}")
        deadline = time.monotonic() + timeout_s
        # Wait for the server's confirmation: from then on no event is missed.
        while True:
            m = p.get_message(timeout=max(deadline - time.monotonic(), 0.001))
            if m and m["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise LockNotGranted(name)
        busy_reported = False
        while True:
            key = conn.execute_command("TRYLOCK", name, "TTL", ttl_ms)
            if key is not None:
                return key
            if on_busy and not busy_reported:
                busy_reported = True
                on_busy()
            # Busy: sleep until the next `free` (other events are skipped).
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockNotGranted(name)
                m = p.get_message(timeout=left)
                if m and m["type"] == "message" and m["data"] == "free":
                    break
            # Free now; another waiter may still win the TRYLOCK race.
    finally:
        p.close()


def main():
    host, port = os.environ.get("RELOCK_ADDR", "127.0.0.1:6380").rsplit(":", 1)

    def connect():
        # One connection per client object: a hold belongs to its connection.
        return redis.Redis(host=host, port=int(port), single_connection_client=True, decode_responses=True)

    name = "reports:daily"
    holder = connect()
    held = holder.execute_command("LOCK", name, "TTL", 15000)
    print(f"holder: acquired {name} fence={held.split('-')[0]}", flush=True)

    # The holder finishes once the waiter has found the lock busy.
    waiter_waits = threading.Event()

    def holder_work():
        waiter_waits.wait(timeout=10)
        holder.execute_command("UNLOCK", name, held)
        print(f"holder: released {name}", flush=True)

    t = threading.Thread(target=holder_work)
    t.start()

    def busy():
        print(f"waiter: {name} is busy; waiting for its free event", flush=True)
        waiter_waits.set()

    waiter = connect()
    key = wait_until_free_and_lock(waiter, name, ttl_ms=15000, timeout_s=10, on_busy=busy)
    t.join()
    fence = int(key.split("-")[0])
    print(f"waiter: acquired {name} fence={fence} (after the holder's: {fence > int(held.split('-')[0])})", flush=True)
    waiter.execute_command("UNLOCK", name, key)
    print(f"waiter: released {name}", flush=True)
    for c in (holder, waiter):
        # redis-py 4's close() keeps the socket in the pool: disconnect it.
        c.close()
        c.connection_pool.disconnect()


if __name__ == "__main__":
    main()
