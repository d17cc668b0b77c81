"""The stages of loading a resources.toml, one module each; orchestrator/config.py runs
them in order: read → merge overrides → expand variables → validate each table → cross-checks."""
