#!/usr/bin/env node
// Sends events to the orchestrator and prints {"ids": [...], "run_ids": [...]} as JSON on stdout.
//
//   node send.js NAME [DATA_JSON] [--count N]
//   EVENT_NAME=... EVENT_DATA='{"...": 1}' node send.js
//
// --count N sends N events with the same name and data in one batch (each gets its own id).
'use strict';

const crypto = require('node:crypto');
const { connect, isStatus } = require('./orchestrator');

function parseArgs(argv) {
  const positional = [];
  let count = Number(process.env.EVENT_COUNT || 1);
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--count') count = Number(argv[(i += 1)]);
    else positional.push(argv[i]);
  }
  const name = positional[0] || process.env.EVENT_NAME;
  const dataJson = positional[1] || process.env.EVENT_DATA || '{}';
  if (!name) throw new Error('usage: node send.js NAME [DATA_JSON] [--count N] (or EVENT_NAME / EVENT_DATA)');
  if (!Number.isInteger(count) || count < 1) throw new Error('--count must be a positive integer');
  // Parse here so a typo fails before anything is sent; the wire carries the JSON text itself.
  const data = JSON.parse(dataJson);
  return { name, data, count };
}

async function main() {
  const { name, data, count } = parseArgs(process.argv.slice(2));
  // Ids are set by the sender so that a send retried after UNAVAILABLE is not ingested twice: the
  // orchestrator acknowledges an id it already has and starts nothing new.
  const events = Array.from({ length: count }, () => ({
    id: crypto.randomUUID(),
    name,
    data_json: JSON.stringify(data),
    ts_unix_ms: Date.now(),
  }));
  const client = connect();
  try {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const reply = await client.call('SendEvent', { events });
        process.stdout.write(`${JSON.stringify({ ids: reply.ids, run_ids: reply.run_ids })}\n`);
        return;
      } catch (err) {
        if (!isStatus(err, 'UNAVAILABLE') || attempt >= 5) throw err;
        await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
      }
    }
  } finally {
    client.close();
  }
}

main().catch((err) => {
  process.stderr.write(`send.js: ${err.message}\n`);
  process.exit(1);
});
