from __future__ import annotations

from pipelex_pool.cli import main

if __name__ == "__main__":
    main()
