"""Self-retire against real HTTP: AWS through moto's Auto Scaling server, Azure and GCP through the local fake.

Azure Resource Manager and the Compute Engine API have no emulator that runs here, so their two calls are checked
against `tests/fake_metadata.py`, which records them (and refuses them without the metadata server's token).
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from gpu_worker.retire import RetireError, retire, retire_aws, retire_azure, retire_gcp
from gpu_worker.settings import WorkerSettings
from tests.fake_metadata import FakeMetadata
from tests.gpu_worker.autoscaling import REGION, group, make_group, moto_server

_moto = pytest.fixture(name="moto_url")(moto_server)


@pytest.fixture
def fake() -> Iterator[FakeMetadata]:
    with FakeMetadata() as server:
        yield server


def test_aws_terminates_this_instance_and_lowers_desired_capacity(moto_url: str, fake: FakeMetadata) -> None:
    autoscaling, instances = make_group(moto_url, desired=2)
    assert len(instances) == 2
    fake.state.instance_id = instances[0]

    done = retire_aws(fake.url, endpoint_url=moto_url)

    assert instances[0] in done
    after = group(autoscaling)
    assert after["DesiredCapacity"] == 1  # the group will not replace it
    remaining = {i["InstanceId"] for i in after["Instances"]}
    assert instances[0] not in remaining and instances[1] in remaining  # only itself, never a busy neighbour
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    state = ec2.describe_instances(InstanceIds=[instances[0]])["Reservations"][0]["Instances"][0]["State"]["Name"]
    ec2.close()
    assert state in ("shutting-down", "terminated")


def test_aws_retire_needs_imds(moto_url: str) -> None:
    settings = WorkerSettings(retire="aws", aws_metadata_url="http://127.0.0.1:9", aws_endpoint_url=moto_url)
    with pytest.raises(RetireError, match="aws"):
        retire(settings)


def test_azure_uniform_scale_set_deletes_its_own_instance(fake: FakeMetadata) -> None:
    done = retire_azure(fake.url, fake.url)

    [call] = fake.state.retire_calls
    assert call["method"] == "POST"
    assert call["path"] == (
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/sdq-rg"
        "/providers/Microsoft.Compute/virtualMachineScaleSets/sdq-vmss/delete"
    )
    assert call["body"] == {"instanceIds": ["7"]} and call["query"]["api-version"]
    assert "instance 7" in done


def test_azure_flexible_scale_set_deletes_its_own_vm(fake: FakeMetadata) -> None:
    fake.state.azure_compute["name"] = "sdq-gpu-a1b2c3"
    retire_azure(fake.url, fake.url)
    [call] = fake.state.retire_calls
    assert call["method"] == "DELETE"
    assert call["path"].endswith("/providers/Microsoft.Compute/virtualMachines/sdq-gpu-a1b2c3")


def test_gcp_deletes_this_instance_from_its_managed_group(fake: FakeMetadata) -> None:
    done = retire_gcp(fake.url, fake.url)

    [call] = fake.state.retire_calls
    assert call["method"] == "POST"
    assert (
        call["path"] == "/compute/v1/projects/123456/zones/us-central1-a/instanceGroupManagers/sdq-gpu/deleteInstances"
    )
    assert call["body"]["instances"] == ["zones/us-central1-a/instances/sdq-gpu-abcd"]
    assert "sdq-gpu-abcd" in done


def test_gcp_instance_outside_a_managed_group_is_an_error(fake: FakeMetadata) -> None:
    fake.state.gcp_manager = ""
    with pytest.raises(RetireError, match="managed instance group"):
        retire_gcp(fake.url, fake.url)
    assert fake.state.retire_calls == []


@pytest.mark.parametrize("provider", ["none", "kubernetes"])
def test_kubernetes_and_none_just_exit(provider: str, fake: FakeMetadata) -> None:
    settings = WorkerSettings(retire=provider, aws_metadata_url=fake.url, gcp_metadata_url=fake.url)
    assert retire(settings)
    assert fake.state.requests == 0
