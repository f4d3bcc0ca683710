// node-redis against relock: the compatibility checks of
// clients_compat_test.go.
//
// Run as `node node_redis.cjs MODULE` (MODULE: "redis" for the current
// major, "redis4" for the npm alias of v4) with RELOCK_ADDR=host:port and
// NODE_PATH=examples/node/node_modules. Prints one line per check,
// "<check> <what the client showed>", which the Go test compares with what
// it expects; any unexpected error exits non-zero. Every wait is bounded.
'use strict';

const mod = process.argv[2];
const { createClient } = require(mod);
const version = require(require('node:path').join(process.env.NODE_PATH, mod, 'package.json')).version;
const url = `redis://${process.env.RELOCK_ADDR}`;
// A second server, started with --requirepass RELOCK_AUTH_PASS.
const authURL = `redis://${process.env.RELOCK_AUTH_ADDR}`;
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

// entry returns the LOCKS entry of name as an object, whatever the protocol
// (RESP3: a map, which node-redis turns into an object; RESP2: a flat array).
function toObject(v) {
  if (!Array.isArray(v)) return v;
  const o = {};
  for (let i = 0; i < v.length; i += 2) o[v[i]] = v[i + 1];
  return o;
}
async function entry(c, name) {
  const all = await c.sendCommand(['LOCKS', 'MATCH', name]);
  const e = all.map(toObject).find((x) => String(x.name) === name);
  return e && { ...e, holders: e.holders.map(toObject), waiters: e.waiters.map(toObject), shape: Array.isArray(all[0]) ? 'flat' : 'map' };
}

async function close(c) {
  // v5+ has close(); v4 has quit() and disconnect().
  if (typeof c.close === 'function') await c.close();
  else await c.quit();
}

async function main() {
  report('version', version);
  const admin = createClient({ url });
  await admin.connect();

  // Default options.
  const c = createClient({ url });
  c.on('error', (e) => report('error-event', e.message));
  await c.connect();
  report('ping', await c.ping());
  const info = String(await c.sendCommand(['CLIENT', 'INFO']));
  report('hello', info.split(' ').filter((f) => /^(resp|lib-name)=/.test(f)).join(' '));

  // Round trips: sendCommand with string arguments. Nil is null.
  const key = await c.sendCommand(['LOCK', 'nr', 'TTL', '60000']);
  report('lock', key);
  report('trylock-busy', String(await c.sendCommand(['TRYLOCK', 'nr'])));
  report('wait-timeout', String(await c.sendCommand(['LOCK', 'nr', 'WAIT', '20'])));
  report('check', await c.sendCommand(['CHECK', 'nr', key]));
  report('renew', await c.sendCommand(['RENEW', 'nr', key, 'TTL', '30000']));
  const e = await entry(c, 'nr');
  report('locks', `shape=${e.shape} size=${e.size} holders=${e.holders.length}`,
    `fence-matches-key=${String(e.holders[0].fence) === key.split('-')[0]}`, `owner=${e.holders[0].owner}`);
  report('unlock', await c.sendCommand(['UNLOCK', 'nr', key]));
  try {
    await c.sendCommand(['UNLOCK', 'nr', key]);
    report('notheld', 'no error');
  } catch (e) {
    report('notheld', err(e));
  }
  try {
    await c.sendCommand(['LOCK', 'nr', 'TTL', 'x']);
    report('err-prefix', 'no error');
  } catch (e) {
    report('err-prefix', err(e));
  }

  // Username + password, client name, db 0.
  const a = createClient({ url, username: 'default', password: 'anything', name: 'nr-app', database: 0 });
  await a.connect();
  const k = await a.sendCommand(['TRYLOCK', 'nr-auth']);
  report('auth-user', `name=${await a.sendCommand(['CLIENT', 'GETNAME'])}`, `lock=${k !== null}`,
    `unlock=${await a.sendCommand(['UNLOCK', 'nr-auth', k])}`);
  report('select-0', await a.sendCommand(['SELECT', '0']));
  await close(a);

  // Password only: v5+ sends HELLO 3 AUTH default <password> (accepted),
  // v4 sends AUTH <password> (refused without --requirepass, as by Redis).
  const p = createClient({ url, password: 'secret', socket: { reconnectStrategy: false } });
  let perr = null;
  p.on('error', (e) => { perr = perr || e; });
  try {
    await p.connect();
    await p.ping();
    report('password-only', 'accepted');
    await close(p);
  } catch (e) {
    report('password-only', 'rejected', err(perr || e));
  }

  // With --requirepass: a password alone, or with the user "default"; a
  // wrong one is refused with WRONGPASS.
  const tryAuth = async (opts, cmd) => {
    const x = createClient({ url: authURL, ...opts, socket: { reconnectStrategy: false } });
    let first = null;
    x.on('error', (e) => { first = first || e; });
    try {
      await x.connect();
      const r = await x.sendCommand(cmd);
      await close(x);
      return String(r);
    } catch (e) {
      return err(first || e);
    }
  };
  report('requirepass',
    `password-only=${await tryAuth({ password: authPass }, ['PING'])}`,
    `user-default=${await tryAuth({ username: 'default', password: authPass }, ['PING'])}`,
    `wrong=[${await tryAuth({ password: 'wrong' }, ['PING'])}]`,
    `none=[${await tryAuth({}, ['TRYLOCK', 'nr-pass'])}]`);

  // A blocked LOCK queues every later command of the same client behind it;
  // a duplicate() connection is served at once. No default read timeout:
  // the LOCK waits until the holder releases.
  const hk = await admin.sendCommand(['LOCK', 'nr-block']);
  const order = [];
  const locked = c.sendCommand(['LOCK', 'nr-block', 'WAIT', '10000']).then((v) => { order.push('lock'); return v; });
  const pinged = c.ping().then(() => order.push('ping'));
  await until(async () => (await entry(admin, 'nr-block')).waiters.length === 1, 'a waiter on nr-block');
  const dup = c.duplicate();
  await dup.connect();
  const dupPing = await dup.ping();
  const blockedBefore = order.length === 0;
  await admin.sendCommand(['UNLOCK', 'nr-block', hk]);
  const got = await locked;
  await pinged;
  report('queued-behind', `order=${order.join(',')}`, `ping-waited=${blockedBefore}`, `duplicate-ping=${dupPing}`, `granted=${got !== null && got !== hk}`);
  await close(dup);

  // Closing the client releases its holds.
  await close(c);
  await until(async () => (await entry(admin, 'nr-block')) === undefined, 'nr-block released when its connection closed');
  report('disconnect', 'released=true');
  await close(admin);
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
