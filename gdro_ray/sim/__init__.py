"""The synthetic-learner simulator behind `gdro-ray simulate` (see `learner.py`, `runner.py`)."""
