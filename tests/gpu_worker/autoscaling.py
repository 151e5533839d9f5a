"""An EC2 Auto Scaling group in moto's server, for the self-retire tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

REGION = "us-east-1"
#: The clients `make_group` handed out, closed when the moto server stops (a client collected later, in another
#: test, would warn of its unclosed sockets there).
_CLIENTS: list[Any] = []


def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server (Auto Scaling + EC2) on a free loopback port; boto3 finds test credentials in the env.

    A fixture body: each test module registers it with `pytest.fixture(name="moto_url")`.
    """
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    httpx.post(f"{url}/moto-api/reset").raise_for_status()  # moto keeps its state per process, across servers
    yield url
    while _CLIENTS:
        _CLIENTS.pop().close()
    server.stop()


def make_group(moto_url: str, *, desired: int = 2) -> tuple[Any, list[str]]:
    """An Auto Scaling group of GPU instances (min 0) in moto; returns its client and instance ids."""
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    autoscaling = boto3.client("autoscaling", region_name=REGION, endpoint_url=moto_url)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="sdq-gpu", LaunchTemplateData={"ImageId": image, "InstanceType": "g5.xlarge"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="sdq-gpu",
        LaunchTemplate={"LaunchTemplateName": "sdq-gpu", "Version": "$Latest"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=desired,
        AvailabilityZones=[f"{REGION}a"],
    )
    ec2.close()
    _CLIENTS.append(autoscaling)
    return autoscaling, [i["InstanceId"] for i in group(autoscaling)["Instances"]]


def group(autoscaling: Any) -> dict[str, Any]:
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["sdq-gpu"])["AutoScalingGroups"][0]
