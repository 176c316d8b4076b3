"""sandbox/docker/: The Docker sandbox backend: the only package that imports docker."""
