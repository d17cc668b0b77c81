"""The typer commands, and the readers that need no supervisor (report, plot, logs)."""
