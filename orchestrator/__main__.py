from __future__ import annotations

from orchestrator.entry import main

if __name__ == "__main__":
    main()
