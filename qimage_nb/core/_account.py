"""What a key can ask a host besides generations: its balance, the models it lists (and checking a
request against them), and uploads of local reference images (remembered in the journal).

Each is optional per host: the provider's ``Capabilities`` say which exist, and asking for one a
host lacks is a one-line ``ValidationError`` with nothing sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._contract import Balance, GenerationRequest, UploadedImage
from .._exceptions import (
    APIError,
    AuthenticationError,
    ProtocolError,
    TransportError,
    ValidationError,
)
from ..providers import check as check_request

if TYPE_CHECKING:
    from ._http import Connection
    from ._journaling import Journal

__all__ = ["Account"]

# An earlier upload is reused while it has at least this long to live: a re-run then sends the
# same URL (and so hits the cache) without ever handing the host a URL about to expire.
_UPLOAD_MARGIN_SECONDS = 24 * 3600

# One process-wide list of model ids per (provider, origin): the model list changes rarely, and a
# request for a model the provider's table does not know must be checked against it before any submit.
_LISTED_MODELS: dict[tuple[str, str], list[str]] = {}
# Likewise each listed model's own schema (API.md 7.7), None where the host serves none.
_MODEL_SCHEMAS: dict[tuple[str, str, str], Mapping[str, Any] | None] = {}


class Account:
    """Balance, model list, request checks and uploads through one connection."""

    def __init__(self, connection: Connection, journal: Journal) -> None:
        self._http = connection
        self._journal = journal

    def _needs(self, capability: str, what: str) -> None:
        provider = self._http.provider
        if not getattr(provider.capabilities, capability):
            raise ValidationError(capability, f"{provider.title} has no {what}")

    async def balance(self) -> Balance:
        self._needs("balance", "balance endpoint")
        provider = self._http.provider
        return provider.read_balance(await self._http.call(provider.balance(), what="balance"))

    async def models(self) -> list[str]:
        self._needs("list_models", "model listing")
        provider = self._http.provider
        cache_key = (provider.name, self._http.base_url)
        if cache_key not in _LISTED_MODELS:
            payload = await self._http.call(provider.list_models(), what="model list")
            _LISTED_MODELS[cache_key] = provider.read_models(payload)
        return list(_LISTED_MODELS[cache_key])

    async def check(self, request: GenerationRequest) -> GenerationRequest:
        provider = self._http.provider
        listed: list[str] = []
        unreadable = None
        if request.model not in provider.models and provider.capabilities.list_models:
            self._http.auth()
            try:
                listed = await self.models()
            except AuthenticationError:
                raise
            except (APIError, TransportError, ProtocolError) as exc:
                # Without the list the model cannot be shown to exist here: refuse it, and say why.
                unreadable = exc
        schema = None
        if request.model in listed and provider.capabilities.model_schema:
            schema = await self._model_schema(request.model)
        try:
            check_request(provider, request, listed, schema)
        except ValidationError as exc:
            if unreadable is None or exc.field != "model":
                raise
            raise ValidationError("model", f"{exc.message} (the host's model list could not be read: {unreadable})") from None
        return request

    async def _model_schema(self, model: str) -> Mapping[str, Any] | None:
        """The host's schema for a listed model, once per origin per process; None where it has none
        (the provider's own table then decides)."""
        provider = self._http.provider
        cache_key = (provider.name, self._http.base_url, model)
        if cache_key not in _MODEL_SCHEMAS:
            try:
                payload = await self._http.call(provider.model_schema(model), what=f"schema of {model}")
            except (APIError, ProtocolError):
                _MODEL_SCHEMAS[cache_key] = None  # no schema served here: the provider's table decides
            except TransportError:
                return None  # not cached: the network may come back
            else:
                _MODEL_SCHEMAS[cache_key] = provider.read_model_schema(payload)
        return _MODEL_SCHEMAS[cache_key]

    def _reuse_seconds(self) -> float:
        """How old an earlier upload may be and still be reused (0: never, where the host's upload
        lifetime is unknown)."""
        lifetime = self._http.provider.capabilities.upload_lifetime
        return max(0.0, lifetime - _UPLOAD_MARGIN_SECONDS) if lifetime else 0.0

    async def upload(self, image: Any, *, reuse: bool = False) -> str:
        from ..journal._uploads import prepare_upload

        self._needs("upload", "upload endpoint: pass public https URLs as references")
        store, origin = self._journal.store, self._http.base_url
        upload = prepare_upload(image)
        digest = hashlib.sha256(upload.data).hexdigest()
        if reuse:
            earlier = await self._journal(store.find_upload, digest, origin, self._reuse_seconds())
            if earlier is not None:
                return earlier[0]
        call = self._http.provider.upload(upload.filename, upload.data, upload.content_type)
        payload = await self._http.call(call, what=f"upload of {upload.filename}", retry=False)
        url = self._http.provider.read_upload(payload).url
        await self._journal(store.remember_upload, digest, origin, url)
        return url

    def find_upload(self, image: Any) -> UploadedImage | None:
        from ..journal._uploads import prepare_upload

        digest = hashlib.sha256(prepare_upload(image).data).hexdigest()
        earlier = self._journal.store.find_upload(digest, self._http.base_url, self._reuse_seconds())
        return None if earlier is None else UploadedImage(url=earlier[0], created_at=earlier[1])
