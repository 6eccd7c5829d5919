"""Credentials out of everything aikd records: tracked params and tags, registered specs, cards.

A secret reaches a job three ways: in the environment (AWS keys, tokens), inside a URI
(``s3://key:secret@bucket/...``, ``http://user:password@host``, ``?secret_key=...``) or
under a field whose name says so (``password``, ``token``, ...). :func:`redact` masks
all three in any plain value (strings, mappings, lists) before it is written anywhere
a user shares.
"""

from __future__ import annotations

import os
import re

MASK = "***"
# variables whose values are credentials wherever they turn up
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_TOKEN",
              "MLFLOW_TRACKING_PASSWORD", "RAY_AUTH_TOKEN", "HF_TOKEN", "DATABRICKS_TOKEN")
SECRET_NAME = re.compile(r"secret|passw|token|credential|access_?key|api_?key|private_?key|session_?key", re.I)
# user info: no '/' before the '@', or a 'user:' then anything up to the '@' (AWS secrets hold '/')
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^\s@/]+|[^\s@/:]+:[^\s@]+)@")
_QUERY = re.compile(r"(?P<key>[?&][^=&\s]+)=(?P<value>[^&\s]*)")
MIN_SECRET = 8  # shorter values (e.g. a test server's "testing") are not masked wherever they occur


def _env_secrets() -> list[str]:
    return [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= MIN_SECRET]


def redact_text(text: str) -> str:
    """``text`` with URI user info, secret-named query values and the environment's secrets masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}={MASK}" if SECRET_NAME.search(m["key"]) else m[0], text)
    for secret in _env_secrets():
        text = text.replace(secret, MASK)
    return text


def redact(value):
    """A copy of a plain value (mappings, lists, strings, numbers) with every credential masked."""
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and SECRET_NAME.search(k) and value[k] not in (None, "")
                else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
