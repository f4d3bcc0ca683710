"""redis-py's PubSub against relock's lock events (events_clients_test.go).

Run as `/usr/bin/python3 redis_py.py NAME` with RELOCK_ADDR=host:port. It
subscribes to the lock NAME's channel (SUBSCRIBE __lock__:NAME) and to a
pattern that matches it (PSUBSCRIBE __lock__:NAME*) on one connection,
prints "ready resp=<protocol>" once the server confirmed both, then one
line per message:

    message <channel> <payload>
    pmessage <pattern> <channel> <payload>

and exits 0 once both subscriptions got "free". Every wait is bounded.
"""

import os
import sys
import time

import redis

HOST, PORT = os.environ["RELOCK_ADDR"].rsplit(":", 1)
NAME = sys.argv[1]
CHANNEL = "__lock__:" + NAME
PATTERN = CHANNEL + "*"


def main():
    r = redis.Redis(host=HOST, port=int(PORT), decode_responses=True)
    info = r.execute_command("CLIENT", "INFO")
    resp = [f for f in info.split() if f.startswith("resp=")][0]
    p = r.pubsub()
    p.subscribe(CHANNEL)
    p.psubscribe(PATTERN)
    confirmed = set()
    free = set()
    deadline = time.monotonic() + 20
    while len(free) < 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"not done within 20s: confirmed {confirmed}, free {free}")
        m = p.get_message(timeout=1.0)
        if m is None:
            continue
        kind = m["type"]
        if kind in ("subscribe", "psubscribe"):
            confirmed.add(kind)
            if len(confirmed) == 2:
                print("ready", resp, flush=True)
        elif kind == "message":
            print("message", m["channel"], m["data"], flush=True)
            if m["data"] == "free":
                free.add(kind)
        elif kind == "pmessage":
            print("pmessage", m["pattern"], m["channel"], m["data"], flush=True)
            if m["data"] == "free":
                free.add(kind)
    p.close()
    r.close()


if __name__ == "__main__":
    main()
