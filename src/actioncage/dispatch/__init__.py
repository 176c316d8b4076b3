"""dispatch/: handing runs to executor workers (Celery) and back."""
