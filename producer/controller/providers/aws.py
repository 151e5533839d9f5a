"""An AWS Auto Scaling group: raise its desired capacity (instances retire themselves with
`TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=True)`, so the controller never lowers it)."""

from __future__ import annotations

from typing import Any

from .base import ProviderError


class AutoScalingGroup:
    """One Auto Scaling group, through boto3 (`pip install 'sdqueue[aws]'`)."""

    name = "aws"

    def __init__(self, group: str, *, region: str | None = None, endpoint_url: str | None = None) -> None:
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ProviderError("the AWS provider needs boto3: pip install 'sdqueue[aws]'") from exc
        self.group = group
        self.client: Any = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)

    def _describe(self) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            groups = self.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])
        except (BotoCoreError, ClientError) as exc:
            raise ProviderError(f"cannot read Auto Scaling group {self.group!r}: {exc}") from exc
        if not groups["AutoScalingGroups"]:
            raise ProviderError(f"no Auto Scaling group {self.group!r}")
        group: dict[str, Any] = groups["AutoScalingGroups"][0]
        return group

    def capacity(self) -> int | None:
        return int(self._describe()["DesiredCapacity"])

    def raise_to(self, count: int) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        group = self._describe()
        current, maximum = int(group["DesiredCapacity"]), int(group["MaxSize"])
        target = min(count, maximum)
        if target <= current:
            return current
        try:
            # HonorCooldown=False: a scale-out for queued work must not wait out a cooldown set for scale-in.
            self.client.set_desired_capacity(
                AutoScalingGroupName=self.group, DesiredCapacity=target, HonorCooldown=False
            )
        except (BotoCoreError, ClientError) as exc:
            raise ProviderError(f"cannot raise Auto Scaling group {self.group!r} to {target}: {exc}") from exc
        return target
