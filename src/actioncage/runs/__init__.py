"""runs/: The run service: admission, execute, outcome classification, effects, idempotency,
triggers, background jobs and callbacks; HTTP-free."""
