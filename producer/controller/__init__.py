"""The controller: work remaining, queue maintenance, the janitor, the scaler and its providers, metrics."""

from .janitor import Janitor, JanitorReport
from .maintenance import run_maintenance
from .scaler import Decision, Scaler, ScalingPolicy
from .service import Controller, run_controller
from .work import QueueWork, read_work

__all__ = [
    "Controller",
    "Decision",
    "Janitor",
    "JanitorReport",
    "QueueWork",
    "Scaler",
    "ScalingPolicy",
    "read_work",
    "run_controller",
    "run_maintenance",
]
