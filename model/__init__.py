"""CEKD networks: CENet (RGB-thermal teacher) and EKNet (thermal-only student)."""
from .cenet import CENet
from .common import SegOutput
from .eknet import EKNet
from .release import from_release, to_release

__all__ = ["CENet", "EKNet", "SegOutput", "from_release", "to_release"]
