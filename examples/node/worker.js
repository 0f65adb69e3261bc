#!/usr/bin/env node
// A worker for the orchestrator in plain Node.js: it registers a two-step function, long-polls for
// work, executes each run from the top against its memoized steps and reports every outcome with
// CompleteStep. The protocol is described in docs/protocol.md.
//
//   node worker.js [--max-runs N]      (or MAX_RUNS=N; 0, the default, means run until SIGTERM/SIGINT)
//
// ORCHESTRATOR_TARGET sets the orchestrator's address (default localhost:50051).
'use strict';

const os = require('node:os');
const { connect, isStatus } = require('./orchestrator');

const APP_ID = 'node-example';
const POLL_WAIT_MS = 30000;

// ---------------------------------------------------------------------------------------------------
// The user's code: a function triggered by an event, split into steps.

/** Prices an order and formats a receipt. The pricing step fails on its first attempt, as a flaky
 * service would; the orchestrator retries that step alone after a backoff. */
async function orderReceipt({ event, step }) {
  const total = await step.run('price-order', ({ attempt }) => {
    if (attempt === 0) throw new Error('pricing service timed out (simulated)');
    return (event.data.items || []).reduce((sum, item) => sum + item.qty * item.price, 0);
  });
  const receipt = await step.run('format-receipt', () => `${event.data.customer}: ${total.toFixed(2)}`);
  return { total, receipt };
}

const FUNCTIONS = {
  'order-receipt': { handler: orderReceipt, triggers: [{ event: 'node/order.placed' }], retries: 3 },
};

// ---------------------------------------------------------------------------------------------------
// The SDK: everything below is what a new language needs.

/** Thrown to stop executing a run: the orchestrator said STOP, or the worker is shutting down. */
class StopRun extends Error {}

/** Thrown to abandon a run: its lease is no longer ours, or the orchestrator cannot be reached. Nothing
 * more is reported; the orchestrator hands the run out again when the lease expires. */
class AbandonRun extends Error {}

/** Replay reached a different step than the one recorded at that position: the code changed. */
class NonDeterminismError extends Error {
  constructor(message) {
    super(message);
    this.name = 'NonDeterminismError';
  }
}

const log = (message) => process.stderr.write(`worker: ${message}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function toError(err) {
  return {
    name: (err && err.name) || 'Error',
    message: String(err && err.message !== undefined ? err.message : err),
    stack: (err && err.stack) || '',
  };
}

/** The lease on one run: its token, and a keep-alive that extends it while slow user code runs. */
class Lease {
  constructor(client, item) {
    this.client = client;
    this.runId = item.run_id;
    this.id = item.lease_id;
    this.expiresUnixMs = item.lease_expires_unix_ms;
    this.lost = false;
  }

  /** Runs `fn`, extending the lease every third of its remaining time until `fn` settles. */
  async keepAliveWhile(fn) {
    const everyMs = Math.max(1000, (this.expiresUnixMs - Date.now()) / 3);
    const timer = setInterval(() => this.extend(), everyMs);
    try {
      return await fn();
    } finally {
      clearInterval(timer);
    }
  }

  async extend() {
    try {
      const reply = await this.client.call('ExtendLease', { run_id: this.runId, lease_id: this.id });
      this.expiresUnixMs = reply.lease_expires_unix_ms;
    } catch (err) {
      // FAILED_PRECONDITION: the lease expired and the run went to another worker, or the run ended.
      // Anything else is transient; the next tick tries again.
      if (isStatus(err, 'FAILED_PRECONDITION')) this.lost = true;
    }
  }
}

/** Reports one outcome. A lost reply is retried with the same request: the orchestrator records it
 * once and answers the repeat the same way. A refused outcome (INVALID_ARGUMENT, RESOURCE_EXHAUSTED:
 * say an output over 4 MiB) is thrown as is, so it fails the run like any error of the function. */
async function complete(client, lease, request) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await client.call('CompleteStep', { run_id: lease.runId, lease_id: lease.id, ...request });
    } catch (err) {
      const transient = isStatus(err, 'UNAVAILABLE') || isStatus(err, 'DEADLINE_EXCEEDED');
      if (transient && attempt < 5) {
        await sleep(200 * 2 ** attempt);
      } else if (transient || isStatus(err, 'FAILED_PRECONDITION')) {
        throw new AbandonRun(err.details);
      } else {
        throw err;
      }
    }
  }
}

/** The `step` object handed to the user's function for one execution of a run, and a check that the
 * execution reached every recorded step (a function that returns early took another path). */
function makeStep(client, item, lease, shouldStop) {
  const counts = new Map();
  let position = 0;
  const checkFinished = () => {
    if (position < item.steps.length) {
      const recorded = item.steps[position].id;
      throw new NonDeterminismError(`step ${position}: recorded "${recorded}", but the code returned`);
    }
  };
  const step = {
    async run(userId, fn) {
      // The Nth repeat of an id within a run (a loop) is "id:N", so ids are the same on every replay.
      const seen = counts.get(userId) || 0;
      counts.set(userId, seen + 1);
      const id = seen === 0 ? userId : `${userId}:${seen}`;

      // Determinism check: the k-th step reached must be the k-th step recorded.
      const memo = item.steps[position];
      if (memo && memo.id !== id) {
        const message = `step ${position}: recorded "${memo.id}", but the code reached "${id}"`;
        throw new NonDeterminismError(message);
      }
      position += 1;
      if (memo && memo.status === 'STEP_STATUS_COMPLETED') return JSON.parse(memo.output_json);

      if (shouldStop()) {
        // Shutting down: hand the run back so another worker takes it now, not at lease expiry.
        await client.call('ReleaseWork', { run_id: lease.runId, lease_id: lease.id }).catch(() => {});
        throw new StopRun();
      }

      // A step recorded as running has failed `attempts` times already: this is its retry.
      const attempt = memo ? memo.attempts : 0;
      const startedUnixMs = Date.now();
      let outcome;
      try {
        const value = await lease.keepAliveWhile(() => fn({ attempt }));
        outcome = { step_output: { output_json: JSON.stringify(value === undefined ? null : value) } };
      } catch (err) {
        log(`run ${item.run_id}: step ${id} attempt ${attempt} failed: ${err.message}`);
        outcome = { step_error: { error: toError(err), retriable: true, retry_after_ms: 0 } };
      }
      if (lease.lost) throw new AbandonRun(`lease lost during step ${id}`);

      const reply = await complete(client, lease, {
        step_id: id,
        ...outcome,
        started_unix_ms: startedUnixMs,
        ended_unix_ms: Date.now(),
      });
      // CONTINUE: committed, go on in place with the step's result (in its stored JSON form).
      // STOP: a retry is scheduled; the run comes back through PollWork after the backoff.
      if (reply.directive !== 'DIRECTIVE_CONTINUE') throw new StopRun();
      lease.expiresUnixMs = reply.lease_expires_unix_ms;
      return JSON.parse(reply.output_json);
    },
  };
  return { step, checkFinished };
}

/** Executes one work item from the top. Resolves to true when this worker ended the run. */
async function execute(client, item, shouldStop) {
  const lease = new Lease(client, item);
  const fn = FUNCTIONS[item.function_id];
  let outcome;
  if (!fn) {
    const error = { name: 'UnknownFunction', message: `no function ${item.function_id} in this worker` };
    outcome = { run_failed: { error, retriable: false } };
  } else {
    const event = {
      id: item.event.id,
      name: item.event.name,
      data: JSON.parse(item.event.data_json || '{}'),
      ts: item.event.ts_unix_ms,
    };
    const { step, checkFinished } = makeStep(client, item, lease, shouldStop);
    try {
      const output = await fn.handler({ event, step, runId: item.run_id });
      checkFinished();
      outcome = { run_completed: { output_json: JSON.stringify(output === undefined ? null : output) } };
    } catch (err) {
      if (err instanceof StopRun) return false;
      if (err instanceof AbandonRun) {
        log(`run ${item.run_id}: abandoned (${err.message})`);
        return false;
      }
      // An error outside any step: the run is re-executed while retries remain, unless retrying
      // cannot help (the code no longer matches the recorded steps).
      const retriable = !(err instanceof NonDeterminismError);
      outcome = { run_failed: { error: toError(err), retriable, retry_after_ms: 0 } };
    }
  }
  try {
    await complete(client, lease, outcome);
  } catch (err) {
    log(`run ${item.run_id}: abandoned, its outcome was not recorded (${err.message})`);
    return false;
  }
  log(`run ${item.run_id}: ${outcome.run_completed ? 'completed' : 'failed'}`);
  return Boolean(outcome.run_completed) || !outcome.run_failed.retriable;
}

async function register(client) {
  const functions = Object.entries(FUNCTIONS).map(([functionId, fn]) => ({
    function_id: functionId,
    triggers: fn.triggers,
    retries: fn.retries,
  }));
  await client.call('RegisterFunctions', { app_id: APP_ID, functions });
}

function maxRunsFromArgs(argv) {
  const i = argv.indexOf('--max-runs');
  const value = Number(i >= 0 ? argv[i + 1] : process.env.MAX_RUNS || 0);
  if (!Number.isInteger(value) || value < 0) throw new Error('--max-runs must be a whole number');
  return value;
}

async function main() {
  const maxRuns = maxRunsFromArgs(process.argv.slice(2));
  const workerId = `node-example-${os.hostname()}-${process.pid}`;
  const client = connect();
  let stopping = false;
  let pollCall = null;
  const stop = () => {
    stopping = true;
    if (pollCall) pollCall.cancel(); // ends the parked long poll at once
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  let registered = false;
  let ended = 0;
  while (!stopping && (maxRuns === 0 || ended < maxRuns)) {
    let items;
    try {
      // Register at start and again after every reconnect: the orchestrator may have been replaced.
      if (!registered) {
        await register(client);
        registered = true;
        log(`registered ${Object.keys(FUNCTIONS).join(', ')} for app ${APP_ID} as ${workerId}`);
      }
      if (stopping) break;
      // max_items is the number of free slots; this worker executes one run at a time.
      const request = {
        app_id: APP_ID,
        function_ids: Object.keys(FUNCTIONS),
        worker_id: workerId,
        max_items: 1,
        max_wait_ms: POLL_WAIT_MS,
      };
      ({ items } = await client.call('PollWork', request, {
        timeoutMs: POLL_WAIT_MS + 10000,
        onCall: (call) => (pollCall = call),
      }));
    } catch (err) {
      if (stopping) break;
      if (!isStatus(err, 'UNAVAILABLE') && !isStatus(err, 'DEADLINE_EXCEEDED')) throw err;
      log(`orchestrator unreachable (${err.details}); retrying`);
      registered = false;
      await sleep(1000);
      continue;
    } finally {
      pollCall = null;
    }
    for (const item of items) {
      if (await execute(client, item, () => stopping)) ended += 1;
    }
  }
  client.close();
  log(`stopped after ending ${ended} run(s)`);
}

main().catch((err) => {
  log(`fatal: ${err.stack || err.message}`);
  process.exit(1);
});
