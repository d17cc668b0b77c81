"""I/O both processes share: paths, the control-socket wire, log files, the registry, logging."""
