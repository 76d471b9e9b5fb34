"""The benchmark suite lives in bench/ at the repository's root, which is not an installed package: make it
importable however pytest was started (`python -m pytest` puts the root on sys.path, the `pytest` script does not)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
