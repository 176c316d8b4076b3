"""audit/: The self-audit runner; its attack scripts are data files."""
