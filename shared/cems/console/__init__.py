"""The operator console (issue 12): what operators see and may do, by role, from the browser and the CLI."""
