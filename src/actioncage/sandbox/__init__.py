"""sandbox/: The sandbox: the backend protocol, limits, the framed channel, the warm pool,
backends."""
