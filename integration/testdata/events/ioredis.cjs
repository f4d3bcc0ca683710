// ioredis's subscribe/psubscribe against relock's lock events
// (events_clients_test.go).
//
// Run as `node ioredis.cjs MODULE NAME` (MODULE: "ioredis" for the current
// major, "ioredis5" for v5) with RELOCK_ADDR=host:port and
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
const Redis = require(mod);
const channel = `__lock__:${name}`;
const pattern = `${channel}*`;

async function main() {
  const timer = setTimeout(() => {
    console.error('not done within 20s');
    process.exit(1);
  }, 20000);
  const addr = process.env.RELOCK_ADDR;
  const sub = new Redis({ host: addr.replace(/:\d+$/, ''), port: Number(addr.split(':').pop()) });
  sub.on('error', (e) => console.error('error event:', e.message));
  const info = String(await sub.call('CLIENT', 'INFO'));
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
  sub.on('message', (ch, message) => got('message', `message ${ch} ${message}`, message));
  sub.on('pmessage', (pat, ch, message) => got('pmessage', `pmessage ${pat} ${ch} ${message}`, message));
  // Both resolve once the server confirmed the subscription.
  await sub.subscribe(channel);
  await sub.psubscribe(pattern);
  console.log(`ready ${resp}`);
  await done;
  clearTimeout(timer);
  await sub.quit();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
