"""Environment capture: secrets on the command line never reach runs.env."""

from __future__ import annotations

import sys

import pytest

from sqltrack_core import _env
from sqltrack_core._env import mask_argv

URL = "postgresql://alice:s3cret@db/x"
MASKED_URL = "postgresql://alice:***@db/x"

MASKED = [
    # URL passwords, anywhere in an argument
    ("url", [URL], [MASKED_URL]),
    ("url-option", [f"--url={URL}"], [f"--url={MASKED_URL}"]),
    ("url-in-key-value", [f"db.url={URL}"], [f"db.url={MASKED_URL}"]),
    ("url-in-text", [f"connect to {URL} now"], [f"connect to {MASKED_URL} now"]),
    (
        "url-scheme-driver",
        ["postgresql+psycopg://bob:pw@h:5432/d"],
        ["postgresql+psycopg://bob:***@h:5432/d"],
    ),
    ("url-at-in-password", ["postgresql://alice:p@ss@db/x"], ["postgresql://alice:***@db/x"]),
    ("url-empty-password", ["postgresql://alice:@db/x"], ["postgresql://alice:***@db/x"]),
    ("url-two", [f"{URL},{URL}"], [f"{MASKED_URL},{MASKED_URL}"]),
    ("query-password", ["postgresql://db/x?password=s3cret"], ["postgresql://db/x?password=***"]),
    (
        "query-password-amp",
        ["postgresql://db/x?user=a&password=s3cret&sslmode=require"],
        ["postgresql://db/x?user=a&password=***&sslmode=require"],
    ),
    (
        "query-sslpassword",
        ["--url=postgresql://db/x?sslpassword=k"],
        ["--url=postgresql://db/x?sslpassword=***"],
    ),
    (
        "query-token",
        ["https://api.example.com/v1?access_token=abc"],
        ["https://api.example.com/v1?access_token=***"],
    ),
    # long options, --opt VALUE and --opt=VALUE
    (
        "password-next",
        ["train.py", "--password", "s3cret", "--lr", "0.1"],
        ["train.py", "--password", "***", "--lr", "0.1"],
    ),
    ("password-equals", ["--password=s3cret"], ["--password=***"]),
    ("password-empty", ["--password="], ["--password=***"]),
    ("password-upper", ["--DB-PASSWORD", "x"], ["--DB-PASSWORD", "***"]),
    ("passwd", ["--passwd", "x"], ["--passwd", "***"]),
    ("pwd", ["--db-pwd=x"], ["--db-pwd=***"]),
    ("token", ["--token", "abc"], ["--token", "***"]),
    ("hf-token", ["--hf_token", "hf_abc"], ["--hf_token", "***"]),
    ("hftoken-joined", ["--hftoken=hf_abc"], ["--hftoken=***"]),
    ("api-key", ["--api-key=k"], ["--api-key=***"]),
    ("apikey", ["--apikey", "k"], ["--apikey", "***"]),
    ("api-key-camel", ["--apiKey", "k"], ["--apiKey", "***"]),
    ("wandb-api-key", ["--wandb-api-key", "k"], ["--wandb-api-key", "***"]),
    ("secret", ["--secret", "x"], ["--secret", "***"]),
    ("client-secret", ["--client_secret=x"], ["--client_secret=***"]),
    ("access-key", ["--access-key", "AKIA"], ["--access-key", "***"]),
    ("secret-access-key", ["--aws-secret-access-key=x"], ["--aws-secret-access-key=***"]),
    ("private-key", ["--private-key", "k"], ["--private-key", "***"]),
    ("auth", ["--auth", "user:pw"], ["--auth", "***"]),
    ("auth-token", ["--auth-token=t"], ["--auth-token=***"]),
    ("basic-auth", ["--basic_auth", "u:p"], ["--basic_auth", "***"]),
    ("oauth", ["--oauth=x"], ["--oauth=***"]),
    ("credentials", ["--credentials", "x"], ["--credentials", "***"]),
    ("credential", ["--gcp-credential=x"], ["--gcp-credential=***"]),
    ("passphrase", ["--key-passphrase", "x"], ["--key-passphrase", "***"]),
    (
        "dotted-option",
        ["--trainer.logger.init_args.api_key=k"],
        ["--trainer.logger.init_args.api_key=***"],
    ),
    ("value-looks-like-option", ["--token", "-abc"], ["--token", "***"]),
    # KEY=VALUE arguments: Hydra overrides and environment style
    ("hydra-password", ["db.password=x"], ["db.password=***"]),
    ("hydra-append", ["+trainer.logger.api_key=z"], ["+trainer.logger.api_key=***"]),
    ("hydra-force", ["++db.passwd=z"], ["++db.passwd=***"]),
    ("env-token", ["HF_TOKEN=abc"], ["HF_TOKEN=***"]),
    ("env-secret", ["AWS_SECRET_ACCESS_KEY=abc"], ["AWS_SECRET_ACCESS_KEY=***"]),
    ("key-value-with-equals", ["password=a=b"], ["password=***"]),
]

UNTOUCHED = [
    ("plain", ["train.py", "--lr", "0.1", "lr=0.1", "-v"]),
    ("empty", []),
    ("short-flag", ["-p", "s3cret"]),
    ("author", ["--author", "alice"]),
    ("author-equals", ["--author=alice"]),
    ("tokenizer", ["--tokenizer", "bert"]),
    ("tokenizer-name", ["--tokenizer_name=bert", "tokenizer=bert"]),
    ("max-tokens", ["--max-new-tokens", "128", "max_tokens=64"]),
    ("vocabulary-tokens", ["--pad-token", "<pad>", "--eos_token=</s>", "--pad_token_id", "0"]),
    ("authority", ["--authority", "x", "authors=a"]),
    ("keys", ["--sort-key", "name", "monitor_key=val_loss"]),
    ("flag-then-option", ["--use-auth", "--lr", "0.1"]),
    ("flag-last", ["train.py", "--password"]),
    ("end-of-options", ["--token", "--", "x"]),
    (
        "url-without-password",
        ["postgresql://alice@db/x", "sqlite:///runs.db", "https://example.com/a?b=c"],
    ),
    ("url-path-colon", ["https://example.com/a:b@c"]),
    ("query-other", ["postgresql://db/x?sslmode=require&user=alice"]),
    ("odd", ["", "=", "--", "-", "//[x", "a b=c", "::", "@:"]),
]


@pytest.mark.parametrize(
    ("argv", "expected"), [case[1:] for case in MASKED], ids=[case[0] for case in MASKED]
)
def test_mask_argv_masks_secret(argv: list[str], expected: list[str]) -> None:
    """Verify that mask_argv replaces the secret in the arguments by ***."""
    before = list(argv)
    assert mask_argv(argv) == expected
    assert argv == before


@pytest.mark.parametrize(
    "argv", [case[1] for case in UNTOUCHED], ids=[case[0] for case in UNTOUCHED]
)
def test_mask_argv_keeps_non_secret(argv: list[str]) -> None:
    """Verify that mask_argv returns arguments without secrets unchanged."""
    assert mask_argv(argv) == argv


def test_mask_argv_accepts_tuple() -> None:
    """Verify that mask_argv takes any sequence and returns a new list."""
    assert mask_argv(("--token", "abc")) == ["--token", "***"]


def test_capture_masks_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that capture() records argv with the secrets masked."""
    monkeypatch.setattr(
        sys, "argv", ["train.py", f"--url={URL}", "--password", "hunter2", "db.password=pw"]
    )
    env = _env.capture()
    assert env["argv"] == [
        "train.py",
        f"--url={MASKED_URL}",
        "--password",
        "***",
        "db.password=***",
    ]
    assert "s3cret" not in str(env)
    assert "hunter2" not in str(env)
