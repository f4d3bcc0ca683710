#!/usr/bin/env python3
"""Alert the moment a relock lock you hold is lost -- not at the next renewal.

    RELOCK_ADDR=127.0.0.1:6380 python3 lost_alert.py

relock publishes every change of a lock on the pub/sub channel
`__lock__:<name>`. A holder that subscribes to its own lock's channel
learns of `released <its fence> expired` (the TTL ran out: the process
was paused, renewals failed) or `released <its fence> forced` (an operator
ran FORCEUNLOCK) within milliseconds, and can stop its work before it
collides with the next holder. The fence tells its own hold from later
ones.

`LossAlarm` does this on a PubSub connection of its own with a thread that
reads it. Subscribing happens after LOCK returned, so it then CHECKs the
key once: a loss in between would otherwise go unseen.

Needs redis-py (`pip install redis`, or Debian's python3-redis).
"""

import os
import threading

import redis

# The reasons of a release that mean "lost": the TTL ran out, FORCEUNLOCK,
# CLIENT KILL of the holding connection. (unlock is our own UNLOCK;
# disconnect is our own connection closing.)
ALERT_REASONS = {"expired", "forced", "killed"}


class LossAlarm:
    """Calls `alert(reason)` once if the hold of `name` with `key` is
    released behind our back. `stop()` ends it."""

    def __init__(self, client, name, key, alert):
        self.name = name
        self.fence = key.split("-", 1)[0]
        self.alert = alert
        self.lost = threading.Event()
        self.released = threading.Event()  # any release of our fence, ours too
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._pubsub = client.pubsub()
        self._pubsub.subscribe(f"__lock__:{name}")
        self._thread = threading.Thread(target=self._run, name=f"loss-alarm-{name}", daemon=True)
        self._thread.start()
        if not self._subscribed.wait(timeout=5):
            raise TimeoutError(f"no subscription to __lock__:{name} within 5s")
        # Lost between LOCK and the subscription? CHECK tells.
        try:
            client.execute_command("CHECK", name, key)
        except redis.ResponseError as e:
            if str(e).startswith("NOTHELD"):
                self._fire("lost before the alarm was set")

    def _run(self):
        while not self._stop.is_set():
            m = self._pubsub.get_message(timeout=0.1)
            if m is None:
                continue
            if m["type"] == "subscribe":
                self._subscribed.set()
                continue
            if m["type"] != "message":
                continue
            # "released <fence> <reason>": ours if the fence is ours.
            fields = m["data"].split(" ")
            if len(fields) >= 3 and fields[0] == "released" and fields[1] == self.fence:
                self.released.set()
                if fields[2] in ALERT_REASONS:
                    self._fire(fields[2])

    def _fire(self, reason):
        if not self.lost.is_set():
            self.lost.set()
            self.alert(reason)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._pubsub.close()


def close_connection(conn):
    # redis-py 4's close() hands the connection back to the pool and keeps
    # the socket (and so the hold) open; disconnecting the pool closes it.
    conn.close()
    conn.connection_pool.disconnect()


def main():
    host, port = os.environ.get("RELOCK_ADDR", "127.0.0.1:6380").rsplit(":", 1)

    def connect():
        return redis.Redis(host=host, port=int(port), single_connection_client=True, decode_responses=True)

    admin = connect()
    name = "jobs:nightly"

    def hold(ttl_ms, note):
        conn = connect()
        key = conn.execute_command("LOCK", name, "TTL", ttl_ms)
        fence = key.split("-")[0]
        print(f"acquired {name} fence={fence} {note}", flush=True)

        def alert(reason):
            print(f"ALERT: lost {name} fence={fence} ({reason})", flush=True)

        return conn, key, LossAlarm(conn, name, key, alert)

    # 1. An operator force-unlocks it. The TTL is a minute: a renewal
    #    would not have noticed for 20 s.
    conn, key, alarm = hold(60000, "ttl=60s")
    admin.execute_command("FORCEUNLOCK", name)
    alarm.lost.wait(timeout=5)
    alarm.stop()
    close_connection(conn)

    # 2. The holder stalls and does not renew: the TTL runs out.
    conn, key, alarm = hold(300, "ttl=300ms, not renewed")
    alarm.lost.wait(timeout=5)
    alarm.stop()
    close_connection(conn)

    # 3. Our own UNLOCK is no loss.
    conn, key, alarm = hold(60000, "ttl=60s")
    conn.execute_command("UNLOCK", name, key)
    alarm.released.wait(timeout=5)
    alarm.stop()
    print(f"released {name}: alert={alarm.lost.is_set()}", flush=True)
    close_connection(conn)
    close_connection(admin)


if __name__ == "__main__":
    main()
