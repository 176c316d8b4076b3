"""egress/: The address guard and the per-run egress proxy."""
