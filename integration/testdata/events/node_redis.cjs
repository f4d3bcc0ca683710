// node-redis's subscribe/pSubscribe against relock's lock events
// (events_clients_test.go).
//
// Run as `node node_redis.cjs MODULE NAME` (MODULE: "redis" for the current
// major, "redis4" for v4) with RELOCK_ADDR=host:port and
// NODE_PATH=examples/node/node_modules. It subscribes to the lock NAME's
// channel (SUBSCRIBE __lock__:NAME) and to a pattern that matches it
// (PSUBSCRIBE __lock__:NAME*) on one connection, prints "ready
// resp=<protocol>" once the server confirmed both, then one line per
// message:
//
//   message <channel> <payload>
//   pmessage <pattern> <channel> <payload>
//
// and exits 0 once both subscriptions got "free". Every wait is bounded.
'use strict';

const [mod, name] = process.argv.slice(2);
const { createClient } = require(mod);
const channel = `__lock__:${name}`;
const pattern = `${channel}*`;

async function main() {
  const timer = setTimeout(() => {
    console.error('not done within 20s');
    process.exit(1);
  }, 20000);
  const sub = createClient({ url: `redis://${process.env.RELOCK_ADDR}` });
  sub.on('error', (e) => console.error('error event:', e.message));
  await sub.connect();
  const info = String(await sub.sendCommand(['CLIENT', 'INFO']));
  const resp = info.split(' ').find((f) => f.startsWith('resp='));
  const free = new Set();
  let finish;
  const done = new Promise((r) => { finish = r; });
  const got = (kind, line, payload) => {
    console.log(line);
    if (payload === 'free') {
      free.add(kind);
      if (free.size === 2) finish();
    }
  };
  // Both resolve once the server confirmed the subscription.
  await sub.subscribe(channel, (message, ch) => got('message', `message ${ch} ${message}`, String(message)));
  await sub.pSubscribe(pattern, (message, ch) => got('pmessage', `pmessage ${pattern} ${ch} ${message}`, String(message)));
  console.log(`ready ${resp}`);
  await done;
  clearTimeout(timer);
  // v5+ has close(); v4 has quit().
  if (typeof sub.close === 'function') await sub.close();
  else await sub.quit();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
