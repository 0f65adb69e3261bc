"""Pure decisions of the orchestrator: the domain model, retries and backoff, run state transitions
and wait matching. Nothing in this package does I/O; the store calls it inside its transactions."""
