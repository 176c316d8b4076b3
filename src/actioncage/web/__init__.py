"""web/: HTTP: the blueprints and the one error table."""
