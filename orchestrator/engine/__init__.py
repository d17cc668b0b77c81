"""The supervisor: records, one resource's life, state on disk, models, memory, hooks."""
