"""Test-wide settings: no network, no display, deterministic torch."""

import os

# Nothing may be downloaded during tests: every Hub / datasets access must hit local files or the mock transport.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
