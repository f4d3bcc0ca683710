// Alert the moment a relock lock you hold is lost -- not at the next
// renewal -- with node-redis.
//
//   cd examples/node && npm ci && RELOCK_ADDR=127.0.0.1:6380 node lost-alert.js
//
// relock publishes every change of a lock on the pub/sub channel
// `__lock__:<name>`. A holder that subscribes to its own lock's channel
// learns of `released <its fence> expired` (the TTL ran out: the process
// was paused, renewals failed) or `released <its fence> forced` (an
// operator ran FORCEUNLOCK) within milliseconds, and can stop its work
// before it collides with the next holder. The fence tells its own hold
// from later ones.
//
// lossAlarm() subscribes on a duplicate() of its own (a subscribed
// node-redis client only (un)subscribes). Subscribing happens after LOCK
// returned, so it then CHECKs the key once: a loss in between would
// otherwise go unseen.
'use strict';

const { createClient } = require('redis');

// The reasons of a release that mean "lost": the TTL ran out, FORCEUNLOCK,
// CLIENT KILL of the holding connection. (unlock is our own UNLOCK;
// disconnect is our own connection closing.)
const ALERT_REASONS = new Set(['expired', 'forced', 'killed']);

// lossAlarm watches the hold of `name` with `key` (taken on `conn`) and
// calls alert(reason) once if it is released behind our back. It returns
// { lost, released, stop }: lost resolves with the reason of the alert,
// released with the reason of any release of the hold (ours too).
async function lossAlarm(conn, name, key, alert) {
  const fence = key.split('-')[0];
  const sub = conn.duplicate();
  sub.on('error', () => {});
  await sub.connect();
  let fired = false;
  let onLost;
  let onReleased;
  const lost = new Promise((r) => { onLost = r; });
  const released = new Promise((r) => { onReleased = r; });
  const fire = (reason) => {
    if (fired) return;
    fired = true;
    alert(reason);
    onLost(reason);
  };
  // Resolves once the server confirmed the subscription.
  await sub.subscribe(`__lock__:${name}`, (payload) => {
    // "released <fence> <reason>": ours if the fence is ours.
    const [kind, f, reason] = payload.split(' ');
    if (kind !== 'released' || f !== fence) return;
    onReleased(reason);
    if (ALERT_REASONS.has(reason)) fire(reason);
  });
  // Lost between LOCK and the subscription? CHECK tells.
  try {
    await conn.sendCommand(['CHECK', name, key]);
  } catch (e) {
    if (e.message.startsWith('NOTHELD')) fire('lost before the alarm was set');
    else throw e;
  }
  return { lost, released, stop: () => sub.destroy(), fired: () => fired };
}

// within resolves with p's value, or with `otherwise` after ms.
function within(p, ms, otherwise) {
  let timer;
  return Promise.race([p, new Promise((r) => { timer = setTimeout(() => r(otherwise), ms); })])
    .finally(() => clearTimeout(timer));
}

async function main() {
  const url = `redis://${process.env.RELOCK_ADDR || '127.0.0.1:6380'}`;
  const name = 'jobs:nightly';
  const admin = createClient({ url });
  await admin.connect();

  async function hold(ttlMs, note) {
    const conn = createClient({ url }); // a hold belongs to its connection
    conn.on('error', () => {});
    await conn.connect();
    const key = await conn.sendCommand(['LOCK', name, 'TTL', String(ttlMs)]);
    const fence = key.split('-')[0];
    console.log(`acquired ${name} fence=${fence} ${note}`);
    const alarm = await lossAlarm(conn, name, key, (reason) => console.log(`ALERT: lost ${name} fence=${fence} (${reason})`));
    return { conn, key, alarm };
  }

  // 1. An operator force-unlocks it. The TTL is a minute: a renewal would
  //    not have noticed for 20 s.
  let h = await hold(60000, 'ttl=60s');
  await admin.sendCommand(['FORCEUNLOCK', name]);
  await within(h.alarm.lost, 5000);
  h.alarm.stop();
  h.conn.destroy();

  // 2. The holder stalls and does not renew: the TTL runs out.
  h = await hold(300, 'ttl=300ms, not renewed');
  await within(h.alarm.lost, 5000);
  h.alarm.stop();
  h.conn.destroy();

  // 3. Our own UNLOCK is no loss.
  h = await hold(60000, 'ttl=60s');
  await h.conn.sendCommand(['UNLOCK', name, h.key]);
  await within(h.alarm.released, 5000);
  h.alarm.stop();
  console.log(`released ${name}: alert=${h.alarm.fired()}`);
  h.conn.destroy();
  admin.destroy();
}

module.exports = { lossAlarm };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
