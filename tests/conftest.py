"""Shared test setup: one CPU thread (the CI machine has two cores and tests run beside each other),
and the project root on the import path so tests can import the top-level files."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)
