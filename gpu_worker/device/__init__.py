"""Where a worker's pipeline calls run.

* `base`: the `Device` and `Session` protocols the GPU executor drives;
* `select`: choosing the torch device (`SDQ_DEVICE`);
* `local`: the in-process device (`LoadedModels` on the executor's thread);
* `process`: the device process, parent side (`DeviceProcess`); `child`: its serve loop; `protocol`: the messages
  between the two.

This package exports only what is light to import: `cli.py` spawns the device process before the worker imports
torch, so `select` and `local` (which import torch) are imported by name where they are needed.
"""

from .base import Device, Rendered, Session
from .process import DeviceProcess, DeviceProcessError

__all__ = ["Device", "DeviceProcess", "DeviceProcessError", "Rendered", "Session"]
