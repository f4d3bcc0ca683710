// relock from Node.js with node-redis: withLock() runs an async function
// while holding a lock, on a dedicated connection, renewing its TTL.
//
//   cd examples/node && npm ci && RELOCK_ADDR=127.0.0.1:6380 node lock.js
//
// Why a dedicated connection (client.duplicate()): relock binds a hold to
// the connection that took it, and node-redis sends every command of a
// client over one connection, answered in order. A LOCK that waits would
// hold up every command queued behind it on that client, and closing the
// client would release every lock taken through it. So each lock gets its
// own duplicate(), closed when the lock is released.
//
// node-redis v5+ opens with HELLO 3 (RESP3) and has no read timeout by
// default (socket.socketTimeout unset), so a LOCK may wait as long as it
// takes. Nil replies are null; an error reply rejects with an error whose
// message starts with its code ("NOTHELD ...").
'use strict';

const { createClient } = require('redis');

class LockNotGranted extends Error {}

// withLock holds the lock `name` while fn runs and returns fn's result.
// Options: ttlMs (default 15000; renewed every third of it, so a hung
// process loses the lock and a dead one releases it at once), waitMs (how
// long to wait in the server's FIFO queue; default: as long as it takes; 0:
// TRYLOCK). fn gets { name, key, fence, signal }: signal aborts when the
// lock is lost (expired, FORCEUNLOCK, connection gone), and fence should go
// to the storage fn writes, so that a stale writer can be refused there.
// Throws LockNotGranted when the wait ran out.
async function withLock(client, name, { ttlMs = 15000, waitMs } = {}, fn) {
  const conn = client.duplicate();
  conn.on('error', () => {}); // a dropped connection shows up as a failed RENEW
  await conn.connect();
  let key;
  try {
    key = waitMs === 0
      ? await conn.sendCommand(['TRYLOCK', name, 'TTL', String(ttlMs)])
      : await conn.sendCommand(['LOCK', name, 'TTL', String(ttlMs), 'WAIT', String(waitMs ?? 0)]); // WAIT 0: no limit
  } catch (e) {
    conn.destroy();
    throw e;
  }
  if (key === null) {
    conn.destroy();
    throw new LockNotGranted(`${name}: not granted`);
  }

  const lost = new AbortController();
  let deadline = Date.now() + ttlMs;
  const renew = setInterval(async () => {
    try {
      await conn.sendCommand(['RENEW', name, key]);
      deadline = Date.now() + ttlMs;
    } catch (e) {
      // NOTHELD: gone for good (RENEW never re-acquires). Anything else is
      // retried until the TTL has run out.
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
    if (!lost.signal.aborted) await conn.sendCommand(['UNLOCK', name, key]).catch(() => {});
    conn.destroy(); // closing the connection releases the lock in any case
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waiters returns how many clients wait for the lock `name` (LOCKS).
async function waiters(client, name) {
  const [entry] = await client.sendCommand(['LOCKS', 'MATCH', name]);
  return entry ? entry.waiters.length : 0; // RESP3: LOCKS entries are maps
}

async function main() {
  const client = createClient({ url: `redis://${process.env.RELOCK_ADDR || '127.0.0.1:6380'}` });
  await client.connect();

  // Two workers want the same lock; the second waits until the first is
  // done, while the shared client keeps answering.
  let aFence;
  let b;
  await withLock(client, 'jobs:nightly', { ttlMs: 1000 }, async ({ fence }) => {
    aFence = fence;
    console.log(`a: acquired jobs:nightly fence=${fence}`);
    b = withLock(client, 'jobs:nightly', {}, async ({ fence }) => {
      console.log(`b: acquired jobs:nightly after a: ${fence > aFence}`);
    });
    const deadline = Date.now() + 5000;
    while ((await waiters(client, 'jobs:nightly')) !== 1 && Date.now() < deadline) await sleep(5);
    console.log('b: waiting');
    console.log(`shared client while b waits: ${await client.ping()}`);
    await sleep(2000); // the work, two TTLs long: renewals keep the lock
    console.log('a: done');
  });
  await b;

  // Not waiting: TRYLOCK (waitMs 0) on a held lock.
  await withLock(client, 'jobs:nightly', {}, async () => {
    await withLock(client, 'jobs:nightly', { waitMs: 0 }, async () => {}).catch((e) => {
      console.log(`try while held: ${e instanceof LockNotGranted ? 'not granted' : e}`);
    });
  });

  // A lock lost under our feet: an operator runs FORCEUNLOCK. The next
  // renewal sees NOTHELD and aborts the signal; the work stops.
  await withLock(client, 'jobs:lost', { ttlMs: 600 }, async ({ signal }) => {
    await client.sendCommand(['FORCEUNLOCK', 'jobs:lost']);
    await new Promise((resolve) => {
      const timeout = setTimeout(resolve, 5000);
      signal.addEventListener('abort', () => { clearTimeout(timeout); resolve(); });
    });
    console.log(`lost: ${signal.aborted ? signal.reason.message : 'not noticed'}`);
  });

  await client.close();
}

module.exports = { withLock, LockNotGranted };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
