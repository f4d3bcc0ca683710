#!/usr/bin/env python3
"""relock from Python with redis-py: a context manager around LOCK/UNLOCK
that renews the lock's TTL in a background thread.

    RELOCK_ADDR=127.0.0.1:6380 python3 lock.py

Needs redis-py (`pip install redis`, or Debian's python3-redis). The lock
functions are `relock_lock` and `Hold`; `main` shows them at work.

Why a dedicated connection: relock binds a hold to the connection that took
it and releases it when that connection closes. A redis-py client uses a
connection *pool*: a LOCK may go out on one pooled connection and the next
command on another, and whatever closes that pooled connection (a
socket_timeout on a later command, pool.disconnect(), a fork) silently
releases the lock. So each lock here gets a client of its own with
`single_connection_client=True`, closed when the lock is released.

Timeouts: redis-py has no read timeout by default (socket_timeout=None),
which is what a LOCK that waits needs. If you set socket_timeout, keep it
above every WAIT you pass, or the wait ends in TimeoutError and the
connection -- with every hold on it -- is dropped.
"""

import contextlib
import os
import threading
import time

import redis


class LockNotGranted(Exception):
    """LOCK's WAIT (or TRYLOCK) ended without the lock."""


class Hold:
    """A granted lock: its key, its fence, and a thread that renews it.

    `lost` is set when the lock is gone before it was released (the TTL ran
    out, someone ran FORCEUNLOCK, the connection dropped); `lost_reason`
    says why. Work done under the lock should check it, and pass `fence` to
    the storage it writes so that a late writer can be refused there.
    """

    def __init__(self, conn, name, key, ttl_ms):
        self.conn = conn
        self.name = name
        self.key = key
        self.fence = int(key.split("-", 1)[0])
        self.ttl_ms = ttl_ms
        self.renewals = 0
        self.lost = threading.Event()
        self.lost_reason = None
        self._io = threading.Lock()  # a redis-py connection is not thread-safe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"relock-renew-{name}", daemon=True)
        self._thread.start()

    def command(self, *args):
        """Runs a command on the lock's own connection."""
        with self._io:
            return self.conn.execute_command(*args)

    def check(self):
        """Milliseconds left on the TTL; raises ResponseError NOTHELD if lost."""
        return self.command("CHECK", self.name, self.key)

    def _renew_loop(self):
        # Renew every third of the TTL: two renewals may fail before the
        # lock expires. NOTHELD means the lock is gone for good (RENEW never
        # re-acquires); other errors are retried until the TTL has passed.
        interval = self.ttl_ms / 3000
        deadline = time.monotonic() + self.ttl_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.command("RENEW", self.name, self.key)
                self.renewals += 1
                deadline = time.monotonic() + self.ttl_ms / 1000
            except redis.ResponseError as e:
                if str(e).split(" ", 1)[0] == "NOTHELD":
                    self._lose(str(e))
                    return
            except redis.RedisError as e:
                if time.monotonic() >= deadline:
                    self._lose(f"renewal failed until the TTL ran out: {e}")
                    return

    def _lose(self, reason):
        self.lost_reason = reason
        self.lost.set()

    def release(self):
        """Stops renewing, unlocks (unless lost) and closes the connection."""
        self._stop.set()
        self._thread.join()
        try:
            if not self.lost.is_set():
                self.command("UNLOCK", self.name, self.key)
        except redis.RedisError:
            pass  # closing the connection below releases it anyway
        finally:
            close_connection(self.conn)


def close_connection(conn):
    # redis-py 4's close() hands the connection back to the pool and keeps
    # the socket (and so the hold) open; disconnecting the pool closes it.
    conn.close()
    conn.connection_pool.disconnect()


@contextlib.contextmanager
def relock_lock(name, *, addr=None, ttl_ms=15000, wait_ms=None, **redis_kwargs):
    """Holds the relock lock `name` for the `with` block.

    Waits for the lock in the server's FIFO queue, at most `wait_ms` (None:
    as long as it takes; 0: not at all, TRYLOCK). The hold has a TTL of
    `ttl_ms`, renewed every third of it while the block runs, so a process
    that hangs loses the lock and one that dies releases it at once.
    Raises LockNotGranted if the wait ran out.
    """
    host, port = (addr or os.environ.get("RELOCK_ADDR", "127.0.0.1:6380")).rsplit(":", 1)
    conn = redis.Redis(host=host, port=int(port), single_connection_client=True,
                       decode_responses=True, **redis_kwargs)
    try:
        if wait_ms == 0:
            key = conn.execute_command("TRYLOCK", name, "TTL", ttl_ms)
        else:
            # WAIT 0 waits without limit, as BLPOP's 0 does.
            key = conn.execute_command("LOCK", name, "TTL", ttl_ms, "WAIT", wait_ms or 0)
    except BaseException:
        close_connection(conn)
        raise
    if key is None:  # nil: the wait ran out
        close_connection(conn)
        raise LockNotGranted(name)
    hold = Hold(conn, name, key, ttl_ms)
    try:
        yield hold
    finally:
        hold.release()


def main():
    addr = os.environ.get("RELOCK_ADDR", "127.0.0.1:6380")
    host, port = addr.rsplit(":", 1)
    admin = redis.Redis(host=host, port=int(port), decode_responses=True)

    # 1. Hold a lock longer than its TTL: the thread renews it.
    with relock_lock("reports:daily", ttl_ms=1000) as lock:
        print(f"acquired {lock.name} fence={lock.fence}")
        # While it is held, nobody else gets it.
        try:
            with relock_lock("reports:daily", wait_ms=0):
                print("BUG: got a held lock")
        except LockNotGranted:
            print("second worker: busy")
        time.sleep(2)  # the work: two TTLs
        left = lock.check()
        print(f"still held after 2s with a 1s TTL: renewed={lock.renewals >= 2} ttl-left={0 < left <= 1000}")
    print(f"released: {admin.execute_command('LOCKS', 'MATCH', 'reports:daily') == []}")

    # 2. Wait at most 200 ms for a lock someone else holds.
    other = redis.Redis(host=host, port=int(port), single_connection_client=True, decode_responses=True)
    other_key = other.execute_command("LOCK", "reports:daily")
    try:
        with relock_lock("reports:daily", wait_ms=200):
            print("BUG: got a held lock")
    except LockNotGranted:
        print("waited 200ms: not granted")
    other.execute_command("UNLOCK", "reports:daily", other_key)
    close_connection(other)

    # 3. A lock lost under our feet: an operator runs FORCEUNLOCK. The next
    # renewal sees NOTHELD and sets `lost`; the work should stop.
    with relock_lock("reports:daily", ttl_ms=600) as lock:
        admin.execute_command("FORCEUNLOCK", "reports:daily")
        lost = lock.lost.wait(timeout=5)
        print(f"lost={lost} reason={lock.lost_reason}")


if __name__ == "__main__":
    main()
