"""hostcalls/: Host calls answered for a sandbox (LLM, Sheets), one registry."""
