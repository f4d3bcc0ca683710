#!/usr/bin/env python3
"""A cache rebuilt under a write lock while readers share it.

    RELOCK_ADDR=127.0.0.1:6380 python3 rw_cache.py

Readers take `LOCK cache:users SHARED`: any number of them hold the lock
at once. A rebuild takes the plain (exclusive) `LOCK cache:users`: it
waits until the readers are done, and readers that come meanwhile queue
behind it (writers never starve), then see the new version.

A reader that finds the cache stale does not release and race for the
write lock: `UPGRADE cache:users <key>` makes its shared hold exclusive
atomically (a new key with a larger fence), so nobody rebuilds in
between; `DOWNGRADE` then lets the queued readers back in.

Each worker is a thread with a connection of its own (a hold belongs to
the connection that took it). Needs redis-py (`pip install redis`, or
Debian's python3-redis).
"""

import os
import threading

import redis

NAME = "cache:users"
TTL_MS = "10000"

cache = {"version": 1, "rebuilt_by_fence": 0}  # stands for the shared cache


def fence_of(key):
    return int(key.split("-", 1)[0])


def fields(flat):
    """A RESP2 field/value array (or a RESP3 map) as a dict."""
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def lock_info(admin):
    """LOCKS of NAME: (holder modes, waiter modes)."""
    for rec in admin.execute_command("LOCKS", "MATCH", NAME):
        rec = fields(rec)
        if rec["name"] == NAME:
            holders = [fields(h)["mode"] for h in rec["holders"]]
            waiters = [fields(w)["mode"] for w in rec["waiters"]]
            return holders, waiters
    return [], []


def wait_for(cond, what, timeout=5.0):
    """Polls cond every 10 ms until it is true; raises after timeout."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        done.wait(0.01)
    raise TimeoutError(what)


def main():
    host, port = os.environ.get("RELOCK_ADDR", "127.0.0.1:6380").rsplit(":", 1)

    def connect():
        return redis.Redis(host=host, port=int(port), single_connection_client=True, decode_responses=True)

    admin = connect()
    conns = []

    def worker_conn():
        c = connect()
        conns.append(c)
        return c

    # 1. Three readers read at once: each waits at the barrier until all
    #    three hold the lock, which only shared holds allow.
    everyone_reads = threading.Barrier(3, timeout=5)
    release_readers = threading.Event()
    seen = []

    def reader():
        c = worker_conn()
        key = c.execute_command("LOCK", NAME, "SHARED", "TTL", TTL_MS)
        everyone_reads.wait()
        seen.append(cache["version"])
        release_readers.wait(timeout=10)
        c.execute_command("UNLOCK", NAME, key)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    wait_for(lambda: len(seen) == 3, "three readers at once")
    print(f"readers sharing {NAME}: {len(lock_info(admin)[0])}", flush=True)

    # 2. A rebuild waits for them; a reader arriving meanwhile queues
    #    behind the writer and sees the new version.
    rebuilt = {}

    def writer():
        c = worker_conn()
        key = c.execute_command("LOCK", NAME, "TTL", TTL_MS)
        rebuilt["alone"] = lock_info(c)[0] == ["exclusive"]
        cache["version"] += 1
        cache["rebuilt_by_fence"] = fence_of(key)
        rebuilt["fence"] = fence_of(key)
        c.execute_command("UNLOCK", NAME, key)

    late = {}

    def late_reader():
        c = worker_conn()
        key = c.execute_command("LOCK", NAME, "SHARED", "TTL", TTL_MS)
        late["version"] = cache["version"]
        c.execute_command("UNLOCK", NAME, key)

    w = threading.Thread(target=writer)
    w.start()
    wait_for(lambda: lock_info(admin)[1] == ["exclusive"], "the writer queued")
    print(f"writer waiting behind {len(lock_info(admin)[0])} readers: True", flush=True)
    r = threading.Thread(target=late_reader)
    r.start()
    wait_for(lambda: lock_info(admin)[1] == ["exclusive", "shared"], "the late reader queued")
    print("late reader queued behind the writer: True", flush=True)
    release_readers.set()
    for t in readers + [w, r]:
        t.join(timeout=10)
    print(f"rebuilt to version {cache['version']} fence={rebuilt['fence']} "
          f"holding the lock alone: {rebuilt['alone']}", flush=True)
    print(f"late reader saw version {late['version']}", flush=True)
    wait_for(lambda: lock_info(admin) == ([], []), "the lock is free")

    # 3. A reader finds the cache stale and upgrades in place: no writer
    #    can get in between its read and its rebuild.
    c = worker_conn()
    key = c.execute_command("LOCK", NAME, "SHARED", "TTL", TTL_MS)
    stale = cache["version"] < 3
    new_key = c.execute_command("UPGRADE", NAME, key, "WAIT", "5000")
    print(f"stale={stale}; upgraded: fence {fence_of(key)} -> {fence_of(new_key)} "
          f"(larger: {fence_of(new_key) > fence_of(key)})", flush=True)
    try:
        c.execute_command("CHECK", NAME, key)
        print("old key still holds: True", flush=True)
    except redis.ResponseError as e:
        print(f"old key: {str(e).split(' ')[0]}", flush=True)
    # A reader arriving now queues behind the exclusive hold...
    queued = {}

    def reader_after_upgrade():
        c2 = worker_conn()
        k = c2.execute_command("LOCK", NAME, "SHARED", "TTL", TTL_MS)
        queued["version"] = cache["version"]
        c2.execute_command("UNLOCK", NAME, k)

    q = threading.Thread(target=reader_after_upgrade)
    q.start()
    wait_for(lambda: lock_info(admin)[1] == ["shared"], "a reader queued behind the upgraded hold")
    cache["version"] += 1
    cache["rebuilt_by_fence"] = fence_of(new_key)
    # ...and DOWNGRADE lets it in at once, while we keep reading.
    c.execute_command("DOWNGRADE", NAME, new_key)
    q.join(timeout=10)
    print(f"rebuilt to version {cache['version']}; downgraded: queued reader got in "
          f"and saw version {queued['version']}", flush=True)
    c.execute_command("UNLOCK", NAME, new_key)

    for conn in conns + [admin]:
        conn.close()
        conn.connection_pool.disconnect()


if __name__ == "__main__":
    main()
