// Wait until a relock lock is free, without polling and without queueing,
// with node-redis.
//
//   cd examples/node && npm ci && RELOCK_ADDR=127.0.0.1:6380 node wait-free.js
//
// relock publishes every change of a lock on the pub/sub channel
// `__lock__:<name>`: `acquired <fence>`, `released <fence> <reason>`,
// `contended <waiters>`, and `free` once nobody holds it, nobody waits for
// it and no lock-delay is left. lockWhenFree() subscribes to the lock's
// channel *first*, then tries TRYLOCK; while the lock is busy it waits for
// the next `free` and tries again. Subscribing before trying means a `free`
// cannot slip by unseen between the try and the wait.
//
// (A plain `LOCK name WAIT ms` also waits, in the server's FIFO queue. This
// is for a worker that must not hold a place in the queue: one that checks
// other work meanwhile, or only wants the lock when nobody else does.)
//
// A subscribed node-redis client only (un)subscribes, so the events come on
// a duplicate() of their own; the lock on another (a hold belongs to the
// connection that took it).
'use strict';

const { createClient } = require('redis');

class LockNotGranted extends Error {}

// lockWhenFree takes the lock `name` on `conn` as soon as it is free and
// returns the key. onBusy is called once, when the first TRYLOCK finds the
// lock held. Throws LockNotGranted after timeoutMs.
async function lockWhenFree(conn, name, { ttlMs = 15000, timeoutMs = 30000, onBusy } = {}) {
  const sub = conn.duplicate();
  sub.on('error', () => {});
  await sub.connect();
  let wake = () => {};
  try {
    // Resolves once the server confirmed: no `free` is missed from here on.
    await sub.subscribe(`__lock__:${name}`, (payload) => {
      if (payload === 'free') wake();
    });
    const deadline = Date.now() + timeoutMs;
    let reported = false;
    for (;;) {
      // Armed before the try: a `free` during the TRYLOCK wakes the wait.
      const freed = new Promise((resolve) => { wake = resolve; });
      const key = await conn.sendCommand(['TRYLOCK', name, 'TTL', String(ttlMs)]);
      if (key !== null) return key;
      if (onBusy && !reported) {
        reported = true;
        onBusy();
      }
      let timer;
      const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), Math.max(deadline - Date.now(), 0)); });
      const why = await Promise.race([freed, timedOut]);
      clearTimeout(timer);
      if (why === 'timeout') throw new LockNotGranted(`${name}: not free within ${timeoutMs} ms`);
      // Free now; another waiter may still win the TRYLOCK race.
    }
  } finally {
    sub.destroy();
  }
}

async function main() {
  const url = `redis://${process.env.RELOCK_ADDR || '127.0.0.1:6380'}`;
  const name = 'reports:daily';
  const holder = createClient({ url });
  const waiter = createClient({ url });
  await holder.connect();
  await waiter.connect();

  const held = await holder.sendCommand(['LOCK', name, 'TTL', '15000']);
  const heldFence = BigInt(held.split('-')[0]);
  console.log(`holder: acquired ${name} fence=${heldFence}`);

  // The holder finishes once the waiter has found the lock busy.
  let released;
  const key = await lockWhenFree(waiter, name, {
    timeoutMs: 10000,
    onBusy: () => {
      console.log(`waiter: ${name} is busy; waiting for its free event`);
      released = holder.sendCommand(['UNLOCK', name, held]).then(() => console.log(`holder: released ${name}`));
    },
  });
  await released;
  const fence = BigInt(key.split('-')[0]);
  console.log(`waiter: acquired ${name} fence=${fence} (after the holder's: ${fence > heldFence})`);
  await waiter.sendCommand(['UNLOCK', name, key]);
  console.log(`waiter: released ${name}`);
  holder.destroy();
  waiter.destroy();
}

module.exports = { lockWhenFree, LockNotGranted };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
