"""actions/: Action code checks, restricted mode, API (templated HTTP) actions."""
