"""Every failure a user can cause is one line on stderr naming the setting, URL or file and what to do, with exit
status 2 for configuration and 1 for runtime errors; `--debug` or `SDQ_DEBUG=1` shows the traceback instead.

Each case runs the real `sdq` in a subprocess, as a user would meet it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.localstack import LocalStack
from tests.support import free_port

CONFIG, RUNTIME = 2, 1


def _sdq(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SDQ_")}
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env={**clean, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("env", "args", "code", "names"),
    [
        pytest.param({"SDQ_MAX_ATTEMPTS": "50"}, ["api"], CONFIG, ["SDQ_MAX_ATTEMPTS", "20", "'50'"], id="attempts"),
        pytest.param(
            {"SDQ_STORAGE_URL": "bogus://x"}, ["api"], CONFIG, ["SDQ_STORAGE_URL", "bogus://x", "s3://"], id="storage"
        ),
        pytest.param({"SDQ_PORT": "http"}, ["api"], CONFIG, ["SDQ_PORT", "integer"], id="port"),
        pytest.param({"SDQ_PRICES": "{not json"}, ["api"], CONFIG, ["SDQ_PRICES", "JSON"], id="prices-json"),
        pytest.param(
            {"SDQ_PRICES_FILE": "/nonexistent/prices.json"}, ["api"], CONFIG, ["SDQ_PRICES_FILE"], id="prices-file"
        ),
        pytest.param(
            {"SDQ_MIN_WORKERS": "5", "SDQ_MAX_WORKERS": "2"}, ["api"], CONFIG, ["SDQ_MIN_WORKERS"], id="bounds"
        ),
        pytest.param(
            {"SDQ_HOST": "0.0.0.0", "SDQ_AUTH": "open"}, ["api"], CONFIG, ["SDQ_AUTH", "SDQ_AUTH=required"], id="open"
        ),
        pytest.param({"SDQ_REDIS_URL": "localhost:6379"}, ["keys", "list"], CONFIG, ["SDQ_REDIS_URL"], id="redis-url"),
        pytest.param(
            {"SDQ_API_URL": "localhost:8000"}, ["status", "j"], CONFIG, ["SDQ_API_URL", "http://"], id="api-url"
        ),
        pytest.param({"SDQ_API_URL": "http://"}, ["cancel", "j"], CONFIG, ["SDQ_API_URL"], id="api-url-no-host"),
        pytest.param({}, ["submit", "x", "--width", "65"], CONFIG, ["width", "multiple of 8"], id="job-field"),
        pytest.param({"SDQ_PROVIDER": "aws"}, ["controller"], CONFIG, ["SDQ_AWS_ASG_NAME"], id="controller"),
        pytest.param({"SDQ_WORKER_THREADS": "0"}, ["worker"], CONFIG, ["SDQ_WORKER_THREADS"], id="worker"),
        pytest.param({}, ["nonsense"], CONFIG, ["nonsense", "--help"], id="unknown-command"),
    ],
)
def test_a_configuration_error_is_one_line_naming_the_setting(
    env: dict[str, str], args: list[str], code: int, names: list[str], tmp_path: Path
) -> None:
    result = _sdq(*args, env={"SDQ_DATA_DIR": str(tmp_path), **env})
    line = _one_line(result)
    assert result.returncode == code, line
    assert line.startswith("sdq: error: ")
    assert all(name in line for name in names), line


@pytest.mark.parametrize("args", [["keys", "list"], ["api"]], ids=["keys", "api"])
def test_a_data_dir_that_is_a_file_names_the_setting(tmp_path: Path, args: list[str]) -> None:
    taken = tmp_path / "data"
    taken.write_text("not a directory")
    result = _sdq(*args, env={"SDQ_DATA_DIR": str(taken)})
    line = _one_line(result)
    assert result.returncode == CONFIG, line
    assert "SDQ_DATA_DIR" in line and str(taken) in line and "directory" in line, line


def test_a_missing_prompts_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "prompts.jsonl"
    result = _sdq("batch", str(missing), "--out", str(tmp_path / "out"), env={"SDQ_DATA_DIR": str(tmp_path)})
    assert result.returncode == CONFIG and str(missing) in _one_line(result)


def test_a_prompts_file_that_is_not_json_lines_names_the_line(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"a cat"\n{not json\n')
    result = _sdq("batch", str(prompts), "--out", str(tmp_path / "out"), env={"SDQ_DATA_DIR": str(tmp_path)})
    assert result.returncode == CONFIG and f"{prompts}:2" in _one_line(result)


def test_submit_with_no_api_running_names_the_url_and_says_to_start_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _sdq("submit", "a cat", env={"SDQ_API_URL": url, "SDQ_DATA_DIR": str(tmp_path)})
    line = _one_line(result)
    assert result.returncode == RUNTIME
    assert url in line and "sdq api" in line and "SDQ_API_URL" in line


def test_keys_with_redis_down_names_the_setting(tmp_path: Path) -> None:
    env = {"SDQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SDQ_DATA_DIR": str(tmp_path)}
    result = _sdq("keys", "create", "--tenant", "t", env=env)
    line = _one_line(result)
    assert result.returncode == RUNTIME and "Redis" in line and "SDQ_REDIS_URL" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    for args, env in ((["--debug", "api"], {}), (["api"], {"SDQ_DEBUG": "1"})):
        result = _sdq(*args, env={"SDQ_MAX_ATTEMPTS": "50", "SDQ_DATA_DIR": str(tmp_path), **env})
        assert result.returncode != 0 and "Traceback" in result.stderr and "max_attempts" in result.stderr


@pytest.fixture(scope="module")
def keyed_api(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    redis.Redis.from_url(redis_server).flushdb()
    tmp = tmp_path_factory.mktemp("cli-errors")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SDQ_")},
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_AUTH": "required",
    }
    stack = LocalStack(env, tmp / "logs").start(webhooks=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.redis
def test_the_apis_refusals_are_one_line_with_what_to_do(keyed_api: LocalStack, redis_server: str) -> None:
    from producer.apikeys import KeyStore

    no_key = _sdq("status", "j" * 26, env={"SDQ_API_URL": keyed_api.api_url})
    line = _one_line(no_key)
    assert no_key.returncode == CONFIG and "401" in line and "SDQ_API_KEY" in line

    _, token = KeyStore(redis.Redis.from_url(redis_server)).create("cli")
    with_key = {"SDQ_API_URL": keyed_api.api_url, "SDQ_API_KEY": token}
    unknown = _sdq("status", "0" * 26, env=with_key)
    assert unknown.returncode == RUNTIME and "no job" in _one_line(unknown)
    refused = _sdq("submit", "x", "--webhook-url", "http://169.254.169.254/latest", env=with_key)
    line = _one_line(refused)
    assert refused.returncode == CONFIG and "422" in line and "webhook_url" in line
