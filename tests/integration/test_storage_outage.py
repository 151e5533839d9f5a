"""A storage outage never loses a job: the attempt hands the job back, and a later attempt completes it.

Also the S3 path end to end: the worker uploads to an S3 server, the API presigns, a plain client downloads.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
import pytest
import redis
from moto.server import ThreadedMotoServer

from producer import JobStatus
from tests.support import free_port, start_stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.s3, pytest.mark.slow]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_jobs_survive_an_s3_outage(redis_server: str, model_cache: Path, tmp_path: Path) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    s3_client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3_client.create_bucket(Bucket="outage")
    s3_client.close()
    url = f"s3://outage/sdq?endpoint_url={endpoint}&region=us-east-1&addressing_style=path"
    stack = start_stack(tmp_path, redis_server, model_cache, SDQ_STORAGE_URL=url, **CREDENTIALS)
    try:
        stack.start_worker()
        with stack.client() as client:
            first = client.wait(client.submit("before the outage", width=64, height=64, steps=2).id)
            assert first.status is JobStatus.SUCCEEDED, first.error
            download = httpx.get(first.outputs[0].url or "")
            assert download.status_code == 200 and download.headers["content-type"] == "image/png"
            assert "X-Amz-Signature=" in (first.outputs[0].url or "")

            s3.stop()  # the bucket becomes unreachable
            job = client.submit("during the outage", width=64, height=64, steps=2)
            handed_back = wait_for(
                lambda: (r := client.get(job.id)).status is JobStatus.QUEUED and r.attempts == 1 and r, timeout_s=90
            )
            assert handed_back.error is None and not handed_back.outputs

            s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            s3.start()  # storage is back (moto keeps its state in this process)
            done = client.wait(job.id, timeout_s=90)
            assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
            assert httpx.get(done.outputs[0].url or "").status_code == 200
    finally:
        stack.stop()
        s3.stop()
