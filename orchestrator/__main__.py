from __future__ import annotations

from orchestrator.spawn import main

if __name__ == "__main__":
    main()
