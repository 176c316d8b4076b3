"""actioncage: run bot platforms' custom actions in throwaway, locked-down containers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actioncage.app import create_app

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # The app (Flask, the MCP SDK, every front door: about 2 s of imports) only for whoever
    # asks for it: the CLI's other commands and the executor worker never do.
    if name == "create_app":
        from actioncage.app import create_app

        return create_app
    raise AttributeError(f"module 'actioncage' has no attribute {name!r}")
