// relock from Node.js with ioredis: the same withLock() as lock.js, with
// ioredis's call() and duplicate().
//
//   cd examples/node && npm ci && RELOCK_ADDR=127.0.0.1:6380 node lock-ioredis.js
//
// Why a dedicated connection (redis.duplicate()): relock binds a hold to
// the connection that took it, and ioredis sends every command of a client
// over one connection, answered in order: a LOCK that waits would hold up
// every command queued behind it.
//
// Timeouts: ioredis has no command timeout by default. With commandTimeout
// set, a LOCK that waits longer rejects with "Command timed out" but stays
// queued on the server, and a late grant then goes to a connection nobody
// reads: the lock stays held until its TTL. So pass a WAIT below
// commandTimeout (as below), and always a TTL.
//
// Reconnects: ioredis reconnects by itself and re-sends commands that had
// no reply yet. A hold does not survive its connection, so a renewal after
// a reconnect gets NOTHELD and the lock is reported lost -- never silently
// re-taken.
'use strict';

const Redis = require('ioredis');

class LockNotGranted extends Error {}

// withLock holds the lock `name` while fn runs; see lock.js. waitMs
// defaults to just below commandTimeout when one is set.
async function withLock(redis, name, { ttlMs = 15000, waitMs } = {}, fn) {
  const timeout = redis.options.commandTimeout;
  if (waitMs === undefined && timeout) waitMs = Math.max(1, timeout - 100);
  const conn = redis.duplicate();
  conn.on('error', () => {}); // a dropped connection shows up as a failed RENEW
  let key;
  try {
    key = waitMs === 0
      ? await conn.call('TRYLOCK', name, 'TTL', ttlMs)
      : await conn.call('LOCK', name, 'TTL', ttlMs, 'WAIT', waitMs ?? 0); // WAIT 0: no limit
  } catch (e) {
    conn.disconnect();
    throw e;
  }
  if (key === null) {
    conn.disconnect();
    throw new LockNotGranted(`${name}: not granted`);
  }

  const lost = new AbortController();
  let deadline = Date.now() + ttlMs;
  const renew = setInterval(async () => {
    try {
      await conn.call('RENEW', name, key);
      deadline = Date.now() + ttlMs;
    } catch (e) {
      if (e.message.startsWith('NOTHELD') || Date.now() >= deadline) {
        clearInterval(renew);
        lost.abort(e);
      }
    }
  }, ttlMs / 3);

  try {
    return await fn({ name, key, fence: BigInt(key.split('-')[0]), signal: lost.signal });
  } finally {
    clearInterval(renew);
    if (!lost.signal.aborted) await conn.call('UNLOCK', name, key).catch(() => {});
    conn.disconnect(); // closing the connection releases the lock in any case
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const [host, port] = (process.env.RELOCK_ADDR || '127.0.0.1:6380').split(':');
  // A command timeout for everything else; LOCK's WAIT stays below it.
  const redis = new Redis({ host, port: Number(port), commandTimeout: 1000 });

  await withLock(redis, 'jobs:import', { ttlMs: 1000 }, async ({ fence }) => {
    console.log(`acquired jobs:import fence=${fence}`);
    // Somebody else waits at most 900 ms (commandTimeout - 100) and gives up.
    const other = await withLock(redis, 'jobs:import', {}, async () => 'BUG: granted twice').catch((e) => e);
    console.log(`other worker: ${other instanceof LockNotGranted ? 'not granted within 900ms' : other}`);
    await sleep(1100); // more work, 2 s in all: the 1 s TTL is renewed meanwhile
    console.log(`still held: ${(await redis.call('LOCKS', 'MATCH', 'jobs:import')).length === 1}`);
  });
  console.log(`released: ${(await redis.call('LOCKS', 'MATCH', 'jobs:import')).length === 0}`);

  // Lost: FORCEUNLOCK by an operator aborts the signal at the next renewal.
  await withLock(redis, 'jobs:import', { ttlMs: 600 }, async ({ signal }) => {
    await redis.call('FORCEUNLOCK', 'jobs:import');
    await new Promise((resolve) => {
      const t = setTimeout(resolve, 5000);
      signal.addEventListener('abort', () => { clearTimeout(t); resolve(); });
    });
    console.log(`lost: ${signal.aborted ? signal.reason.message : 'not noticed'}`);
  });
  redis.disconnect();
}

module.exports = { withLock, LockNotGranted };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
