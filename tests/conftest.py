import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A copy of ../shared/reference/official_state_dict.json: every key and shape of the released weights.
MANIFEST = ROOT / "tests" / "data" / "official_state_dict.json"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
