"""Generate docs/configuration.md from the pydantic models (``reference_markdown()``).

    python scripts/gen_config_docs.py           # (re)write docs/configuration.md
    python scripts/gen_config_docs.py --check   # exit 1 if it is out of date (the tests do this)

The tables are never edited by hand: change the models in dockercc/config/models.py (the
built-in tools' in dockercc/config/tools.py) and re-run. The generator is
:mod:`dockercc.config.reference`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from dockercc.config.reference import main

    raise SystemExit(main())
