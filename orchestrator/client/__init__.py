"""Standard library only: up/down/status/restart against a supervisor; finds or forks it."""
