"""`docker compose -f docker-compose.yml -f docker-compose.s3.yml up`: the trainer publishes into a bucket
served by `rclone serve s3` in a container, the server syncs from it with no shared volume, reaches
healthy, and hot-reloads a retrain with no failed request. Built on tests/system/test_compose.py's Stack."""

from __future__ import annotations

import json

from conftest import SHARED_MNIST
from helpers import eventually, first_test_digits
from test_compose import BUILD_TIMEOUT, READY_TIMEOUT, PredictionStream, Stack, brought_down, require_docker

# docker-compose.s3.yml before the test file, so the test's dataset bind mount survives its volume reset.
FILES = "-f docker-compose.yml -f docker-compose.s3.yml -f docker-compose.test.yml"


def test_compose_with_a_bucket_store_serves_and_hot_reloads() -> None:
    require_docker()
    stack = Stack("mnist-s3")
    stack.compose = f"docker compose -p {stack.project} {FILES}"
    # The override's own bucket and keys, whatever AWS settings the host's shell has.
    stack.env = {key: value for key, value in stack.env.items() if not key.startswith("AWS_")}
    images, _labels = first_test_digits(SHARED_MNIST, 16)
    with brought_down(stack):
        stack.run("build", timeout=BUILD_TIMEOUT)
        stack.run("up", "-d", timeout=READY_TIMEOUT)
        stack.wait_healthy()
        assert "published version 1 to s3://models/mnist/1" in stack.logs("trainer")
        assert "fetched model version 1 from s3://models/mnist" in stack.logs("server")
        assert stack.served_version() == 1
        # The gRPC process syncs the bucket too.
        eventually(lambda: stack.health("grpc") == "healthy", "healthy grpc service", timeout=120, interval=1,
                   detail=lambda: stack.logs("grpc")[-3000:])
        for service in ("trainer", "server", "grpc"):  # no volume between them: only the bucket
            container = stack.run("ps", "-aq", service).split()[0]
            mounts = json.loads(stack._run(["docker", "inspect", "-f", "{{json .Mounts}}", container], 30))
            assert [mount for mount in mounts if mount["Type"] == "volume"] == [], mounts

        # The server image keeps only botocore's models of S3 and the credential chain (Dockerfile server-deps).
        clients = ("import boto3; [boto3.client(name, region_name='us-east-1')"
                   " for name in ('s3', 'sts', 'sso', 'sso-oidc')]")
        stack.run("run", "--rm", "--no-deps", "--quiet-build", "--entrypoint", "python", "server", "-c", clients)

        stream = PredictionStream(stack.url + "/predict", images)
        try:
            stack.run("run", "--rm", "--quiet-build", "-e", "SKIP_IF_PUBLISHED=false", "trainer", timeout=600)
            stack.wait_for_version(2)
            stream.wait_for(5)
        finally:
            stream.finish()
        assert not stream.failures, f"{len(stream.failures)} failed requests: {stream.failures[:5]}"
        assert {1, 2} <= set(stream.versions), f"versions seen: {sorted(set(stream.versions))}"
