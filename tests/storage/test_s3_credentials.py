"""Credentials that botocore gets from another AWS service: an assume-role profile (STS) — what EKS pods
(web identity) and most organisations' profiles use. The S3 store's botocore session loads S3's model only
(storage/s3.py), but the credential chain makes STS, SSO and sign-in clients of the same session."""

from __future__ import annotations

import os
import subprocess

from tests.support.cli import artfs_cmd
from tests.support.s3server import FOREIGN_AWS_VARS, S3Server


def _env(s3_server: S3Server, tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *FOREIGN_AWS_VARS)}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "no-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-creds"),
                "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "ARTFS_CACHE": str(tmp_path / "cache"), **extra})
    return env


def _put_and_ls(env: dict[str, str], store: str, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    put = subprocess.run(artfs_cmd("put", str(src), "ds", "--store", store), env=env, capture_output=True,
                         text=True, timeout=120)
    assert put.returncode == 0, put.stderr
    ls = subprocess.run(artfs_cmd("ls", "ds", "--store", store), env=env, capture_output=True, text=True,
                        timeout=120)
    assert ls.returncode == 0 and "v0" in ls.stdout, ls.stderr


def test_an_assume_role_profile_gets_its_credentials_from_sts(s3_server: S3Server, s3_store_uri, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile base]\naws_access_key_id = testing\naws_secret_access_key = testing\n\n"
        "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/artfs-reader\nsource_profile = base\n")
    _put_and_ls(_env(s3_server, tmp_path, AWS_CONFIG_FILE=str(config), AWS_PROFILE="role"), s3_store_uri, tmp_path)


def test_a_web_identity_token_gets_its_credentials_from_sts(s3_server: S3Server, s3_store_uri, tmp_path):
    """How a Kubernetes pod with an IAM role (EKS IRSA) gets credentials."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
    env = _env(s3_server, tmp_path, AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
               AWS_ROLE_ARN="arn:aws:iam::123456789012:role/artfs-pod", AWS_ROLE_SESSION_NAME="artfs-test")
    _put_and_ls(env, s3_store_uri, tmp_path)
