"""Self-retire: after an idle exit, remove this machine from its group so the group does not replace it.

Each cloud's group keeps a target size; a worker that merely exits leaves a VM (billed) or gets replaced. So the
idle worker asks the group to delete *itself* and lower the target by one, in one call:

* AWS: `TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=True)`, with the instance id and region
  from IMDSv2 and credentials from boto3's chain (the instance role).
* Azure: VM Scale Set `delete` of its own instance id (uniform orchestration) or a DELETE of its own VM (flexible),
  with a managed-identity token from IMDS.
* GCP: `instanceGroupManagers.deleteInstances` on its own managed instance group (found in the `created-by`
  metadata attribute), with the service account's token from the metadata server.
* Kubernetes (a KEDA ScaledJob's pod) and `none`: exiting is enough.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from .notices import ImdsClient
from .notices.azure import METADATA_HEADERS as AZURE_HEADERS
from .notices.gcp import METADATA_HEADERS as GCP_HEADERS
from .settings import WorkerSettings

log = logging.getLogger(__name__)

AZURE_COMPUTE_API = "2024-07-01"
AZURE_MANAGEMENT_RESOURCE = "https://management.azure.com/"


class RetireError(Exception):
    """The machine could not retire itself (it still exits; the group's own scale-in or a person must remove it)."""


def retire(settings: WorkerSettings) -> str:
    """Retire this machine as `settings.retire` says; returns what was done, raises `RetireError`."""
    provider = settings.retire
    try:
        if provider == "aws":
            return retire_aws(settings.aws_metadata_url, endpoint_url=settings.aws_endpoint_url)
        if provider == "azure":
            return retire_azure(settings.azure_metadata_url, settings.azure_management_url)
        if provider == "gcp":
            return retire_gcp(settings.gcp_metadata_url, settings.gcp_compute_url)
    except RetireError:
        raise
    except Exception as exc:
        raise RetireError(f"{provider}: {type(exc).__name__}: {exc}") from exc
    return "nothing to retire" if provider == "none" else f"{provider}: exiting is enough"


def retire_aws(metadata_url: str, *, endpoint_url: str | None = None) -> str:
    """Terminate this instance through its Auto Scaling group, decrementing the group's desired capacity."""
    import boto3

    imds = ImdsClient(metadata_url)
    try:
        instance_id = imds.text("/latest/meta-data/instance-id")
        region = imds.text("/latest/meta-data/placement/region")
    finally:
        imds.close()
    client: Any = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)
    result = client.terminate_instance_in_auto_scaling_group(
        InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
    )
    activity = result.get("Activity", {})
    return f"aws: {instance_id} terminating ({activity.get('Description') or activity.get('StatusCode') or 'ok'})"


def retire_azure(metadata_url: str, management_url: str, *, timeout_s: float = 10.0) -> str:
    """Delete this VM from its scale set (uniform: by instance id; flexible: the VM resource itself)."""
    with httpx.Client(base_url=metadata_url.rstrip("/"), headers=AZURE_HEADERS, timeout=timeout_s) as imds:
        compute = _ok(imds.get("/metadata/instance/compute", params={"api-version": "2021-02-01"})).json()
        token = _ok(
            imds.get(
                "/metadata/identity/oauth2/token",
                params={"api-version": "2018-02-01", "resource": AZURE_MANAGEMENT_RESOURCE},
            )
        ).json()["access_token"]
    group = f"/subscriptions/{compute['subscriptionId']}/resourceGroups/{compute['resourceGroupName']}"
    scale_set, name = compute.get("vmScaleSetName") or "", compute["name"]
    with httpx.Client(
        base_url=management_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s
    ) as arm:
        if scale_set and name.startswith(scale_set + "_"):  # uniform orchestration: `<scale set>_<instance id>`
            instance_id = name.rsplit("_", 1)[1]
            _ok(
                arm.post(
                    f"{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}/delete",
                    params={"api-version": AZURE_COMPUTE_API},
                    json={"instanceIds": [instance_id]},
                )
            )
            return f"azure: scale set {scale_set} deleting instance {instance_id}"
        _ok(
            arm.delete(
                f"{group}/providers/Microsoft.Compute/virtualMachines/{name}", params={"api-version": AZURE_COMPUTE_API}
            )
        )
        return f"azure: deleting VM {name} (scale set {scale_set or '-'})"


def retire_gcp(metadata_url: str, compute_url: str, *, timeout_s: float = 10.0) -> str:
    """Delete this instance from its managed instance group (which lowers the group's target size by one)."""
    with httpx.Client(base_url=metadata_url.rstrip("/"), headers=GCP_HEADERS, timeout=timeout_s) as metadata:
        name = _ok(metadata.get("/computeMetadata/v1/instance/name")).text.strip()
        zone = _ok(metadata.get("/computeMetadata/v1/instance/zone")).text.strip().rsplit("/", 1)[-1]
        created_by = metadata.get("/computeMetadata/v1/instance/attributes/created-by")
        token = _ok(metadata.get("/computeMetadata/v1/instance/service-accounts/default/token")).json()["access_token"]
    if created_by.status_code != 200 or "/instanceGroupManagers/" not in created_by.text:
        raise RetireError(f"gcp: instance {name} was not created by a managed instance group")
    manager = created_by.text.strip()  # projects/<number>/(zones|regions)/<where>/instanceGroupManagers/<name>
    with httpx.Client(
        base_url=compute_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s
    ) as compute:
        _ok(
            compute.post(
                f"/compute/v1/{manager}/deleteInstances",
                json={"instances": [f"zones/{zone}/instances/{name}"], "skipInstancesOnValidationError": True},
            )
        )
    return f"gcp: {manager.rsplit('/', 1)[-1]} deleting {name}"


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise RetireError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:200]}"
        )
    return response
