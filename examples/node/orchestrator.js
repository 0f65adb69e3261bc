// Connecting to the orchestrator: load the .proto at run time, build a client, call RPCs as promises.
// This is the whole "generated code" a new language needs; send.js and worker.js build on it.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The contract lives in the repository's proto/ folder; PROTO_DIR points elsewhere when the example is
// copied out of the repository.
const PROTO_DIR = process.env.PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');

// keepCase keeps the proto's snake_case field names; longs: Number turns int64 fields (the *_unix_ms
// instants) into plain numbers; enums: String gives 'DIRECTIVE_CONTINUE' rather than 1; defaults fills
// unset fields so `item.steps` is always an array.
const packageDefinition = protoLoader.loadSync(path.join(PROTO_DIR, 'durable', 'v1', 'orchestrator.proto'), {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: Number,
  defaults: true,
  enums: String,
  oneofs: true,
});
const { Orchestrator } = grpc.loadPackageDefinition(packageDefinition).durable.v1;

/**
 * Channel credentials from the environment: plaintext by default; TLS when ORCHESTRATOR_TLS_CA names a
 * PEM file with the CA to trust, or ORCHESTRATOR_TLS=1 to trust the system's roots.
 */
function channelCredentials() {
  const caFile = process.env.ORCHESTRATOR_TLS_CA;
  if (caFile) return grpc.credentials.createSsl(fs.readFileSync(caFile));
  if (process.env.ORCHESTRATOR_TLS === '1') return grpc.credentials.createSsl();
  return grpc.credentials.createInsecure();
}

/**
 * A client for the Orchestrator service whose methods return promises:
 * `await client.call('SendEvent', {events: [...]}, {timeoutMs: 10000})`.
 * ORCHESTRATOR_TARGET sets the address (default localhost:50051); ORCHESTRATOR_API_KEY, when set, is
 * sent as `authorization: Bearer <key>` on every call.
 */
function connect(target = process.env.ORCHESTRATOR_TARGET || 'localhost:50051') {
  const stub = new Orchestrator(target, channelCredentials());
  const apiKey = process.env.ORCHESTRATOR_API_KEY;

  /** Calls one unary RPC. `onCall` receives the call object, so a caller can cancel a long poll. */
  function call(method, request, { timeoutMs = 10000, onCall } = {}) {
    const metadata = new grpc.Metadata();
    if (apiKey) metadata.set('authorization', `Bearer ${apiKey}`);
    return new Promise((resolve, reject) => {
      const c = stub[method](request, metadata, { deadline: Date.now() + timeoutMs }, (err, reply) =>
        err ? reject(err) : resolve(reply),
      );
      if (onCall) onCall(c);
    });
  }

  return { call, close: () => stub.close() };
}

/** True when a failed call carries the given gRPC status name, e.g. isStatus(err, 'UNAVAILABLE'). */
function isStatus(err, name) {
  return Boolean(err) && err.code === grpc.status[name];
}

module.exports = { connect, isStatus };
