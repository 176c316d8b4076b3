"""In-container runtime: runs one user script's execute_action(context) and reports the result."""
