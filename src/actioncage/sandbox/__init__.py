"""The sandbox: limits, the channel envelope and the Docker runner."""
