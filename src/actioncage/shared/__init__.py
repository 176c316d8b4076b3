"""shared/: state every process must agree on (rate and concurrency limits, idempotency
claims, key revocation, the Rasa domain cache, the live-container count) behind small
interfaces (state.py): memory.py is the in-process default, redis_state.py the Redis one
(ACTIONCAGE_REDIS_URL); components.build_shared picks one."""
