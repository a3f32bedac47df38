import os

import pytest
import torch

from interp.model import load_model

from helpers import TINY

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny():
    return load_model(TINY)
