"""Bastion's Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document): the
authorization server of an ``upstream_oauth`` upstream that supports them fetches
``<public_url>/oauth/client-metadata.json``, whose URL is Bastion's client id there."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.vault.rfc7591 import CLIENT_METADATA_PATH, client_metadata


def client_metadata_route(public_url: str) -> Route:
    document = client_metadata(public_url)

    async def serve(request: Request) -> Response:
        return JSONResponse(document, headers={"cache-control": "public, max-age=3600"})

    return Route(CLIENT_METADATA_PATH, serve, methods=["GET"])


__all__ = ["client_metadata_route"]
