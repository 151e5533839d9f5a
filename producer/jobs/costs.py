"""What a job cost, as its record reports it (`JobRecord.cost`); the pricing itself is `producer.cost`."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from .enums import TextEnum


class Capacity(TextEnum):
    """How an instance is bought."""

    SPOT = "spot"
    ON_DEMAND = "on_demand"


class JobCost(BaseModel):
    """What one job cost, in USD: its own GPU time plus its share of the fleet's cold starts and idle time."""

    model_config = ConfigDict(frozen=True)

    gpu_s: float = Field(description="Seconds a worker was busy with this job (every attempt that finished).")
    instance_type: str
    capacity: Capacity
    usd_per_hour: float | None = Field(description="The price table's rate; null when the type is not in it.")
    gpu_usd: float = Field(description="Its share of the day's GPU time that ran jobs.")
    overhead_usd: float = Field(description="Share of the day's cold starts, idle time and lost attempts.")
    total_usd: float
    day: date = Field(description="UTC day the job's GPU time was recorded on.")
    final: bool = Field(description="False while that day is still running: the overhead share may still change.")
