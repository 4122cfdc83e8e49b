"""The daemon: CLI, HTTP app, scheduler and settings."""
