"""redis-py against relock: the compatibility checks of clients_compat_test.go.

Run as `/usr/bin/python3 redis_py.py` with RELOCK_ADDR=host:port. Prints one
line per check, "<check> <what the client showed>", which the Go test
compares with what it expects; any unexpected exception exits non-zero.
Every wait is bounded by a deadline.
"""

import os
import sys
import threading
import time

import redis

HOST, PORT = os.environ["RELOCK_ADDR"].rsplit(":", 1)
PORT = int(PORT)
# A second server, started with --requirepass RELOCK_AUTH_PASS.
AUTH_HOST, AUTH_PORT = os.environ["RELOCK_AUTH_ADDR"].rsplit(":", 1)
AUTH_PASS = os.environ["RELOCK_AUTH_PASS"]


def report(check, *what):
    print(check, *what, flush=True)


def client(**kw):
    return redis.Redis(host=HOST, port=PORT, **kw)


def until(cond, what, within=5.0):
    """Polls cond every 5 ms until it is true; fails after `within` s."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.005)


def err(e):
    return f"{type(e).__name__}: {e}"


def locks(c, name):
    """The LOCKS entry of name as a dict (fields of a flat RESP2 array)."""
    for entry in c.execute_command("LOCKS", "MATCH", name):
        d = dict(zip(entry[::2], entry[1::2]))
        if d[b"name"] == name.encode():
            return d
    return None


def field(entry, name):
    d = dict(zip(entry[::2], entry[1::2]))
    return d[name.encode()]


admin = client(single_connection_client=True)
report("version", redis.__version__)

# Default options: a pooled client, RESP2, no handshake command at all.
r = client()
report("ping", r.ping())
info = r.execute_command("CLIENT", "INFO").decode()
report("hello", " ".join(f for f in info.split() if f.startswith(("resp=", "lib-name="))))

# Round trips. Nil is None; the key is bytes (decode_responses=False).
key = r.execute_command("LOCK", "py", "TTL", 60000)
report("lock", key.decode())
report("trylock-busy", repr(r.execute_command("TRYLOCK", "py")))
report("wait-timeout", repr(r.execute_command("LOCK", "py", "WAIT", 20)))
report("check", r.execute_command("CHECK", "py", key))
report("renew", r.execute_command("RENEW", "py", key, "TTL", 30000))
entry = locks(r, "py")
holder = dict(zip(entry[b"holders"][0][::2], entry[b"holders"][0][1::2]))
report(
    "locks",
    f"size={entry[b'size']} holders={len(entry[b'holders'])}",
    f"fence-matches-key={str(holder[b'fence']) == key.decode().split('-')[0]}",
    f"owner={holder[b'owner']!r}",
)
report("unlock", r.execute_command("UNLOCK", "py", key))
try:
    r.execute_command("UNLOCK", "py", key)
    report("notheld", "no error")
except redis.ResponseError as e:
    report("notheld", err(e))
try:
    r.execute_command("LOCK", "py", "TTL", "x")
    report("err-prefix", "no error")
except redis.ResponseError as e:
    report("err-prefix", err(e))
try:
    r.execute_command("TRYLOCK", "py-size", "SIZE", 2)
    r.execute_command("TRYLOCK", "py-size", "SIZE", 3)
    report("code", "no error")
except redis.ResponseError as e:
    report("code", err(e))

# Username + password, client name and db 0: AUTH default x, CLIENT SETNAME
# (and no SELECT for db 0).
a = client(username="default", password="anything", client_name="py-app", db=0,
           single_connection_client=True)
k = a.execute_command("TRYLOCK", "py-auth")
report("auth-user", f"name={a.client_getname()}", f"lock={k is not None}",
       f"unlock={a.execute_command('UNLOCK', 'py-auth', k)}")
report("select-0", a.execute_command("SELECT", 0))

# Password only: redis-py sends AUTH <password>, which a server without
# --requirepass refuses (as Redis does).
try:
    client(password="secret").ping()
    report("password-only", "accepted")
except redis.ResponseError as e:
    report("password-only", "rejected", err(e))

# With --requirepass: a password alone, or with the user "default"; a wrong
# one is refused with WRONGPASS.
def auth_client(**kw):
    return redis.Redis(host=AUTH_HOST, port=int(AUTH_PORT), single_connection_client=True, **kw)


pw = auth_client(password=AUTH_PASS)
k = pw.execute_command("TRYLOCK", "py-pass")
pw_ok = pw.execute_command("UNLOCK", "py-pass", k) == 1
user_ok = auth_client(username="default", password=AUTH_PASS).ping()
try:
    auth_client(password="wrong").ping()
    wrong = "accepted"
except redis.RedisError as e:
    wrong = err(e)
try:
    auth_client().execute_command("TRYLOCK", "py-pass")
    none = "accepted"
except redis.RedisError as e:
    none = err(e)
report("requirepass", f"password-only={pw_ok} user-default={user_ok}", f"wrong=[{wrong}]", f"none=[{none}]")

# A blocking LOCK: redis-py has no read timeout by default
# (socket_timeout=None), so it waits until the holder's TTL runs out.
holder_key = admin.execute_command("LOCK", "py-block", "TTL", 400)
blocked = client(single_connection_client=True)
got = blocked.execute_command("LOCK", "py-block", "WAIT", 10000)
try:
    admin.execute_command("CHECK", "py-block", holder_key)
    expired = False
except redis.ResponseError:
    expired = True
report("blocked", f"granted={got is not None and got != holder_key}", f"holder-expired={expired}")
blocked.close()

# socket_timeout below the wait: redis-py raises TimeoutError and drops the
# connection, so the server removes the waiter -- and releases every hold
# taken earlier on that (pooled) connection.
held = admin.execute_command("LOCK", "py-held")
short = client(socket_timeout=0.2, single_connection_client=True)
mine = short.execute_command("LOCK", "py-mine")
try:
    short.execute_command("LOCK", "py-held", "WAIT", 5000)
    report("socket-timeout", "no timeout")
except redis.TimeoutError as e:
    until(lambda: locks(admin, "py-mine") is None, "py-mine released after the timeout")
    until(lambda: not locks(admin, "py-held")[b"waiters"], "the waiter left the queue")
    report("socket-timeout", err(e), "earlier-hold-released=True", "waiter-left=True")
admin.execute_command("UNLOCK", "py-held", held)

# The pool caveat: a hold belongs to the pooled connection that sent LOCK;
# whatever closes that connection (pool.disconnect(), a fork, a timeout)
# releases it.
p = client()
pk = p.execute_command("LOCK", "py-pool")
holder_id = field(admin.execute_command("LOCKS", "MATCH", "py-pool")[0][5][0], "client-id")
p.connection_pool.disconnect()
until(lambda: locks(admin, "py-pool") is None, "py-pool released when the pool closed its connections")
report("pool", f"held-by-a-pool-connection={holder_id > 0}", "released-by-pool-disconnect=True")

# Disconnect releases: a thread blocked in LOCK, its connection closed.
w = client(single_connection_client=True)
hk = admin.execute_command("LOCK", "py-wait")
result = []
t = threading.Thread(target=lambda: result.append(w.execute_command("LOCK", "py-wait", "WAIT", 5000)))
t.start()
until(lambda: len(locks(admin, "py-wait")[b"waiters"]) == 1, "a waiter on py-wait")
admin.execute_command("UNLOCK", "py-wait", hk)
t.join(5)
report("handoff", f"granted={bool(result and result[0])}")
# Redis.close() only gives the connection back to the pool (redis-py 4):
# the socket stays open and so does the hold. Closing the pool's
# connections is what releases it.
w.close()
still = locks(admin, "py-wait") is not None
w.connection_pool.disconnect()
until(lambda: locks(admin, "py-wait") is None, "py-wait released when its connection closed")
report("disconnect", f"close-keeps-hold={still}", "pool-disconnect-releases=True")
sys.exit(0)
