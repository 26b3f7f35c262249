"""Secrets kept out of what a run records: the run report, error messages and the console.

Credentials reach a run through the environment (AWS_*), the settings (`[spark.conf]` keys that
name a secret) and URLs (user-info): `secret_values` collects the first two, `redact` masks them,
URL user-info and `key=value` credentials in any text.
"""

from __future__ import annotations

import os
import re

SECRET_KEY = re.compile(
    r"secret|password|passwd|token|access\.key|credential|signature|sas", re.IGNORECASE
)
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# user:password@ (a secret key may hold "/") or user@ right after the scheme
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^@\s/:]+:[^@\s]*|[^@\s/:]+)@")
_KEY_VALUE = re.compile(
    r"(?P<key>[\w.-]*(?:secret|password|passwd|token|access\.key|credential)"
    r"[\w.-]*)(?P<sep>\"?\s*=\s*)(?P<value>\"[^\"]*\"|\S+)",
    re.IGNORECASE,
)


def secret_values(settings: dict | None = None) -> list[str]:
    """The values no record may show: credentials in the environment and in the settings."""
    values = [os.environ[k] for k in SECRET_ENV if os.environ.get(k)]
    for key, value in ((settings or {}).get("spark", {}).get("conf", {})).items():
        if SECRET_KEY.search(key) and str(value):
            values.append(str(value))
    return sorted(set(values), key=len, reverse=True)


def redact(text: str, secrets: list[str] = ()) -> str:
    """`text` with URL user-info, `key=value` credentials and the known secret values masked."""
    for s in secrets:
        if len(s) >= 4:  # shorter ones would mask ordinary words
            text = text.replace(s, "***")
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}***", text)
