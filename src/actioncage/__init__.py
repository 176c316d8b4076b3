"""actioncage: run bot platforms' custom actions in throwaway, locked-down containers."""

from actioncage.app import create_app

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]
