"""Where a DashScope key is sent: the base URL chosen the way the official SDK chooses it.

PROVIDERS.md 1b (the SDK's common/env.py and constants.py, H): ``DASHSCOPE_HTTP_BASE_URL`` wins;
else ``DASHSCOPE_API_REGION`` with ``DASHSCOPE_WORKSPACE_ID`` gives the workspace host
``https://{workspace}.{region}.maas.aliyuncs.com/api/v1``; else the default. The SDK's default is
Beijing; ours is Singapore (``dashscope-intl``), the endpoint international keys belong to. Both
variables become part of a host name, so both are checked as DNS labels first: a hostile value
(``evil.com/x#``) must never move the key to another host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .._exceptions import ValidationError

__all__ = ["BEIJING", "SINGAPORE", "Choice", "choose", "describe_url"]

BEIJING = "https://dashscope.aliyuncs.com/api/v1"
SINGAPORE = "https://dashscope-intl.aliyuncs.com/api/v1"
URL_ENV, REGION_ENV, WORKSPACE_ENV = "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_API_REGION", "DASHSCOPE_WORKSPACE_ID"
# The regions the SDK knows for workspace hosts (others are accepted if they are DNS labels).
MAAS_REGIONS = ("ap-southeast-1", "us-east-1", "cn-hongkong", "eu-central-1", "ap-northeast-1")
_LEGACY = {"cn-beijing": BEIJING}
_NAMES = {"ap-southeast-1": "Singapore", "cn-beijing": "Beijing", "us-east-1": "Virginia",
          "cn-hongkong": "Hong Kong", "eu-central-1": "Frankfurt", "ap-northeast-1": "Tokyo"}
_WORKSPACE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_REGION = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_WORKSPACE_HOST = re.compile(r"^https://([^./]+)\.([^./]+)\.maas\.aliyuncs\.com(/|$)")


class Choice(tuple):
    """(base URL, why): why says which variable chose it, for ``%qimage config`` and a 401."""

    __slots__ = ()

    def __new__(cls, url: str, why: str) -> Choice:
        return super().__new__(cls, (url, why))

    @property
    def url(self) -> str:
        return self[0]

    @property
    def why(self) -> str:
        return self[1]


def _label(name: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    if not pattern.match(value):
        # The value is not echoed: it may be anything, a key pasted in the wrong place included.
        raise ValidationError(
            name.lower(), f"${name} is not a DNS label ({len(value)} characters; letters, digits and - only, "
            f"e.g. {example}): refused, so the key goes to no other host; fix or unset it"
        )
    return value


def choose(environ: Mapping[str, str]) -> Choice:
    """The base URL the variables choose, and why. Raises a one-line ValidationError for a
    region or workspace id that is not a DNS label, or a workspace region with no workspace id."""
    explicit = environ.get(URL_ENV, "").strip()
    if explicit:
        where = describe_url(explicit)
        return Choice(explicit, f"${URL_ENV}" + (f": {where}" if where != explicit else ""))
    region = environ.get(REGION_ENV, "").strip().lower()
    workspace = environ.get(WORKSPACE_ENV, "").strip()
    if workspace:
        _label(WORKSPACE_ENV, workspace, _WORKSPACE, "ws-1a2b3c")
    if not region:
        why = "default: Singapore, the international endpoint"
        if workspace:
            why += f" (${WORKSPACE_ENV} is used with ${REGION_ENV})"
        return Choice(SINGAPORE, why + f"; ${REGION_ENV} or ${URL_ENV} change it")
    _label(REGION_ENV, region, _REGION, "ap-southeast-1")
    name = _NAMES.get(region, region)
    if region in _LEGACY and not workspace:
        return Choice(_LEGACY[region], f"${REGION_ENV}={region} ({name}, the shared endpoint)")
    if not workspace:
        if region == "ap-southeast-1":
            return Choice(SINGAPORE, f"${REGION_ENV}={region} ({name}, no workspace: the international endpoint)")
        raise ValidationError(
            "region", f"${REGION_ENV}={region} needs ${WORKSPACE_ENV}: its host is "
            f"https://{{workspace}}.{region}.maas.aliyuncs.com/api/v1 (or set ${URL_ENV})"
        )
    return Choice(
        f"https://{workspace}.{region}.maas.aliyuncs.com/api/v1",
        f"${REGION_ENV}={region} ({name}) with ${WORKSPACE_ENV}",
    )


_TYPED = {"singapore": "ap-southeast-1", "intl": "ap-southeast-1", "international": "ap-southeast-1",
          "beijing": "cn-beijing", "virginia": "us-east-1", "hongkong": "cn-hongkong", "hong-kong": "cn-hongkong",
          "frankfurt": "eu-central-1", "tokyo": "ap-northeast-1"}


def url_for(region: str, workspace: str = "") -> str:
    """The base URL of a region (and workspace) typed by the user, e.g. at ``%qimage login``. Only
    the regions known here are taken, and nothing typed is echoed: it may be a key pasted there."""
    typed = region.strip().lower() or "ap-southeast-1"
    key = _TYPED.get(typed, typed)
    if key not in (*MAAS_REGIONS, *_LEGACY):
        raise ValidationError(
            "region", f"that is not a region qimage_nb knows: singapore, beijing, {', '.join(MAAS_REGIONS[1:])} "
            f"(or set ${URL_ENV})"
        )
    return choose({REGION_ENV: key, WORKSPACE_ENV: workspace}).url


def describe_url(url: str) -> str:
    """Which region a base URL is, in words."""
    host = url.split("//", 1)[-1].split("/", 1)[0].lower()
    if host == "dashscope-intl.aliyuncs.com":
        return "the Singapore region (international)"
    if host == "dashscope.aliyuncs.com":
        return "the Beijing region"
    match = _WORKSPACE_HOST.match(url.lower())
    if match:
        region = match.group(2)
        return f"workspace {match.group(1)} in {_NAMES.get(region, region)} ({region})"
    return url
