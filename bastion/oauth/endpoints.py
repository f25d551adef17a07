"""HTTP for the authorization server's machine-facing endpoints: metadata (RFC 8414 / OIDC
discovery, RFC 9728), JWKS, token, registration, revocation, introspection.

The one place OAuth errors become responses (RFC 6749 §5.2 JSON bodies; 401 with a Basic
challenge when client authentication failed over HTTP Basic). Token responses and errors carry
``Cache-Control: no-store``. These endpoints use no cookies, so any origin may call them
(browser-based MCP clients need CORS for discovery and the token request).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.oauth.bridge import TokenExchange
from bastion.oauth.context import OAuthContext
from bastion.oauth.dpop import PROOF_ALGS
from bastion.oauth.errors import InvalidClient, InvalidClientMetadata, InvalidRequest, OAuthError, ServerError
from bastion.oauth.idjag import ID_JAG_PROFILE, JWT_BEARER, IdJagGrant
from bastion.oauth.registration import RegistrationEndpoint
from bastion.oauth.rfc7009 import RevocationEndpoint
from bastion.oauth.rfc7662 import IntrospectionEndpoint
from bastion.oauth.rfc8414 import (
    INTROSPECTION_PATH,
    JWKS_PATH,
    REGISTRATION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    WELL_KNOWN_PATHS,
    authorization_server_metadata,
)
from bastion.oauth.rfc9728 import WELL_KNOWN as PRM_WELL_KNOWN
from bastion.oauth.rfc9728 import metadata_document, resource_for_path
from bastion.oauth.token import TokenEndpoint

log = logging.getLogger("bastion.oauth")
MAX_FORM_BYTES = 64 * 1024
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "authorization, content-type, mcp-protocol-version",
    "access-control-max-age": "600",
}
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
Form = dict[str, list[str]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, {**CORS, **(headers or {})}, media_type="application/json")


def error_response(err: OAuthError, request: Request) -> Response:
    headers = dict(NO_STORE)
    status = err.status
    if isinstance(err, InvalidClient) and not request.headers.get("authorization"):
        status = 400  # RFC 6749 §5.2: 401 only when the client tried an Authorization header
    if status == 401:
        # RFC 6749 §5.2 / RFC 9110 §15.5.2: a 401 names the scheme to use (whatever was tried)
        headers["www-authenticate"] = 'Basic realm="bastion", charset="UTF-8"'
    return json_response(err.body(), status, headers)


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method != "POST" or content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("send a POST with application/x-www-form-urlencoded parameters")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("request body too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("parameters must be UTF-8") from None
    return parse_qs(text, keep_blank_values=False, max_num_fields=100)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(ctx: OAuthContext, handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        try:
            return await handler(request)
        except OAuthError as err:
            if err.detail:
                log.info("%s %s: %s (%s)", request.method, request.url.path, err.description, err.detail)
            ctx.refused(None, err.error, f"{request.url.path}: {err.description}")
            return error_response(err, request)
        except ValueError as exc:  # parse_qs limits, malformed input
            return error_response(InvalidRequest(f"malformed request ({type(exc).__name__})"), request)
        except Exception:
            log.exception("internal error on %s", request.url.path)
            return error_response(ServerError("internal error"), request)

    return run


def oauth_routes(
    ctx: OAuthContext, idjag: IdJagGrant | None = None, exchange: TokenExchange | None = None
) -> list[Route]:
    token = TokenEndpoint(ctx, idjag, exchange)
    revocation = RevocationEndpoint(ctx)
    introspection = IntrospectionEndpoint(ctx)
    registration = RegistrationEndpoint(ctx)
    metadata = authorization_server_metadata(
        ctx.issuer,
        scopes=[*ctx.auth.scopes, "offline_access"],
        dynamic_registration=ctx.auth.registration.enabled,
        id_jag_bridge=exchange is not None and exchange.enabled,
    )
    metadata["client_id_metadata_document_supported"] = ctx.registry.accepts_metadata_documents
    if idjag is not None and idjag.enabled:  # Enterprise-Managed Authorization (ID-JAG §7.2)
        metadata["grant_types_supported"].append(JWT_BEARER)
        metadata["authorization_grant_profiles_supported"] = [ID_JAG_PROFILE]
        metadata["dpop_signing_alg_values_supported"] = list(PROOF_ALGS)
    resources = [r.resource for r in ctx.resources.values()]

    async def as_metadata(request: Request) -> Response:
        return json_response(metadata, headers={"cache-control": "public, max-age=300"})

    async def protected_resource(request: Request) -> Response:
        found = resource_for_path(request.url.path, resources)
        if found is None:
            return json_response({"error": "not_found", "error_description": "No such resource"}, 404)
        scopes = ctx.resources[found.resource]
        document = metadata_document(found, issuer=ctx.issuer, scopes=ctx.auth.scopes)
        document["scopes_supported"] = list(dict.fromkeys([*scopes.required, *ctx.auth.scopes]))
        return json_response(document, headers={"cache-control": "public, max-age=300"})

    async def jwks(request: Request) -> Response:
        return json_response(ctx.keys.ring.jwks(), headers={"cache-control": "public, max-age=300"})

    async def token_endpoint(request: Request) -> Response:
        form = await read_form(request)
        body = await token.handle(form, request.headers.get("authorization"), request.headers.get("dpop"))
        return json_response(body, 200, NO_STORE)

    async def revoke(request: Request) -> Response:
        await revocation.handle(await read_form(request), request.headers.get("authorization"))
        return json_response({}, 200, NO_STORE)

    async def introspect(request: Request) -> Response:
        body = await introspection.handle(await read_form(request), request.headers.get("authorization"))
        return json_response(body, 200, NO_STORE)

    async def register(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise InvalidClientMetadata("send the client metadata as application/json")
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            raise InvalidClientMetadata("client metadata too large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidClientMetadata("the body is not JSON") from None
        address = request.client.host if request.client else "unknown"
        return json_response(await registration.handle(body, address), 201, NO_STORE)

    get = ["GET", "OPTIONS"]
    post = ["POST", "OPTIONS"]
    routes = [Route(path, _guarded(ctx, as_metadata), methods=get) for path in WELL_KNOWN_PATHS]
    routes += [
        Route(PRM_WELL_KNOWN, _guarded(ctx, protected_resource), methods=get),
        Route(PRM_WELL_KNOWN + "/{rest:path}", _guarded(ctx, protected_resource), methods=get),
        Route(JWKS_PATH, _guarded(ctx, jwks), methods=get),
        Route(TOKEN_PATH, _guarded(ctx, token_endpoint), methods=post),
        Route(REVOCATION_PATH, _guarded(ctx, revoke), methods=post),
        Route(INTROSPECTION_PATH, _guarded(ctx, introspect), methods=post),
    ]
    if ctx.auth.registration.enabled:
        routes.append(Route(REGISTRATION_PATH, _guarded(ctx, register), methods=post))
    return routes
