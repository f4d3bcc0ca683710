// ioredis against relock: the compatibility checks of clients_compat_test.go.
//
// Run as `node ioredis.cjs MODULE` (MODULE: "ioredis" for the current major,
// "ioredis5" for the npm alias of v5) with RELOCK_ADDR=host:port and
// NODE_PATH=examples/node/node_modules. Prints one line per check,
// "<check> <what the client showed>", which the Go test compares with what
// it expects; any unexpected error exits non-zero. Every wait is bounded.
'use strict';

const mod = process.argv[2];
const Redis = require(mod);
const version = require(require('node:path').join(process.env.NODE_PATH, mod, 'package.json')).version;
const hostPort = (addr) => [addr.replace(/:\d+$/, ''), Number(addr.split(':').pop())];
const [host, port] = hostPort(process.env.RELOCK_ADDR);
// A second server, started with --requirepass RELOCK_AUTH_PASS.
const [authHost, authPort] = hostPort(process.env.RELOCK_AUTH_ADDR);
const authPass = process.env.RELOCK_AUTH_PASS;

function report(check, ...what) {
  console.log([check, ...what].join(' '));
}

const err = (e) => `${e.constructor.name}: ${e.message}`;

async function until(cond, what, within = 5000) {
  const deadline = Date.now() + within;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${within} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// ioredis returns a RESP3 map as a flat array ("legacy" reply mapping), as
// RESP2 does.
function toObject(v) {
  if (!Array.isArray(v)) return v;
  const o = {};
  for (let i = 0; i < v.length; i += 2) o[v[i]] = v[i + 1];
  return o;
}
async function entry(c, name) {
  const all = await c.call('LOCKS', 'MATCH', name);
  const e = all.map(toObject).find((x) => String(x.name) === name);
  return e && { ...e, holders: e.holders.map(toObject), waiters: e.waiters.map(toObject) };
}

// Options every client here shares: fail at once instead of reconnecting
// for ever when the test's server is gone.
const base = { host, port, retryStrategy: () => null, maxRetriesPerRequest: 0 };

async function main() {
  report('version', version);
  const admin = new Redis(base);

  // Default options (ioredis 5: RESP2; 6: HELLO 3). The ready check is INFO.
  const c = new Redis({ host, port });
  report('ping', await c.ping());
  const info = String(await c.call('CLIENT', 'INFO'));
  report('hello', info.split(' ').filter((f) => /^(resp|lib-name)=/.test(f)).join(' '));

  // Round trips with call(). Nil is null.
  const key = await c.call('LOCK', 'io', 'TTL', 60000);
  report('lock', key);
  report('trylock-busy', String(await c.call('TRYLOCK', 'io')));
  report('wait-timeout', String(await c.call('LOCK', 'io', 'WAIT', 20)));
  report('check', await c.call('CHECK', 'io', key));
  report('renew', await c.call('RENEW', 'io', key, 'TTL', 30000));
  const e = await entry(c, 'io');
  report('locks', `size=${e.size} holders=${e.holders.length}`,
    `fence-matches-key=${String(e.holders[0].fence) === key.split('-')[0]}`, `owner=${e.holders[0].owner}`);
  report('unlock', await c.call('UNLOCK', 'io', key));
  try {
    await c.call('UNLOCK', 'io', key);
    report('notheld', 'no error');
  } catch (e) {
    report('notheld', err(e));
  }
  try {
    await c.call('LOCK', 'io', 'TTL', 'x');
    report('err-prefix', 'no error');
  } catch (e) {
    report('err-prefix', err(e));
  }

  // Username + password, connection name, db 0.
  const a = new Redis({ ...base, username: 'default', password: 'anything', connectionName: 'io-app', db: 0 });
  const k = await a.call('TRYLOCK', 'io-auth');
  report('auth-user', `name=${await a.client('GETNAME')}`, `lock=${k !== null}`, `unlock=${await a.call('UNLOCK', 'io-auth', k)}`);
  report('select-0', await a.select(0));
  a.disconnect();

  // Password only: ioredis 6 sends HELLO 3 AUTH default <password>; ioredis
  // 5 sends AUTH <password>, and on the "no password configured" error it
  // warns and goes on.
  const p = new Redis({ ...base, password: 'secret', lazyConnect: true });
  let perr = null;
  p.on('error', (e) => { perr = perr || e; });
  try {
    await p.connect();
    await p.ping();
    report('password-only', 'accepted');
  } catch (e) {
    report('password-only', 'rejected', err(perr || e));
  }
  p.disconnect();

  // With --requirepass: a password alone, or with the user "default"; a
  // wrong one is refused with WRONGPASS.
  const tryAuth = async (opts, ...cmd) => {
    const x = new Redis({ ...base, host: authHost, port: authPort, lazyConnect: true, ...opts });
    let first = null;
    x.on('error', (e) => { first = first || e; });
    try {
      await x.connect();
      return String(await x.call(...cmd));
    } catch (e) {
      return err(first || e);
    } finally {
      x.disconnect();
    }
  };
  report('requirepass',
    `password-only=${await tryAuth({ password: authPass }, 'PING')}`,
    `user-default=${await tryAuth({ username: 'default', password: authPass }, 'PING')}`,
    `wrong=[${await tryAuth({ password: 'wrong' }, 'PING')}]`,
    `none=[${await tryAuth({}, 'TRYLOCK', 'io-pass')}]`);

  // A blocked LOCK queues every later command of the same connection behind
  // it; duplicate() gives a connection that is served at once.
  const hk = await admin.call('LOCK', 'io-block');
  const order = [];
  const locked = c.call('LOCK', 'io-block', 'WAIT', 10000).then((v) => { order.push('lock'); return v; });
  const pinged = c.ping().then(() => order.push('ping'));
  await until(async () => (await entry(admin, 'io-block')).waiters.length === 1, 'a waiter on io-block');
  const dup = c.duplicate();
  const dupPing = await dup.ping();
  const blockedBefore = order.length === 0;
  await admin.call('UNLOCK', 'io-block', hk);
  const got = await locked;
  await pinged;
  report('queued-behind', `order=${order.join(',')}`, `ping-waited=${blockedBefore}`, `duplicate-ping=${dupPing}`, `granted=${got !== null && got !== hk}`);
  dup.disconnect();

  // commandTimeout below the wait: the promise rejects, but the connection
  // stays and so does the LOCK request on the server. When the lock frees,
  // the late grant goes to this connection and nobody sees its key: the
  // hold stays until its TTL (or a disconnect). Hence: pass WAIT below
  // commandTimeout, and always a TTL.
  const t = new Redis({ ...base, commandTimeout: 200 });
  const tid = await t.call('CLIENT', 'ID');
  const th = await admin.call('LOCK', 'io-late');
  let timedOut = 'no timeout';
  try {
    await t.call('LOCK', 'io-late', 'TTL', 60000);
  } catch (e) {
    timedOut = err(e);
  }
  await admin.call('UNLOCK', 'io-late', th);
  await until(async () => ((await entry(admin, 'io-late')) || { holders: [] }).holders.length === 1, 'the late grant');
  const late = (await entry(admin, 'io-late')).holders[0];
  // With a WAIT below commandTimeout the server answers nil in time.
  const w = new Redis({ ...base, commandTimeout: 500 });
  const waited = await w.call('LOCK', 'io-late', 'WAIT', 100);
  w.disconnect();
  report('command-timeout', timedOut, `late-grant-held-by-timed-out-connection=${late['client-id'] === tid}`, `ttl=${late.ttl > 0}`,
    `wait-below-timeout=${String(waited)}`);
  t.disconnect();

  // Closing the connection releases its holds.
  c.disconnect();
  await until(async () => (await entry(admin, 'io-block')) === undefined, 'io-block released when its connection closed');
  await until(async () => (await entry(admin, 'io-late')) === undefined, 'io-late released when its connection closed');
  report('disconnect', 'released=true');
  admin.disconnect();
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
