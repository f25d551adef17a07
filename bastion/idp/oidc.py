"""Bastion as an OpenID Connect relying party at one enterprise IdP (OIDC Core 1.0).

- Discovery and JWKS are fetched from the admin-configured provider (cached; the JWKS is fetched
  again once when a token names an unknown ``kid``, so IdP key rollover just works).
- Authorization requests carry Bastion's own PKCE (S256), ``state`` and ``nonce``; the MCP
  client's values never reach the IdP.
- The callback's RFC 9207 ``iss`` is checked when present, and required when the IdP
  advertises ``authorization_response_iss_parameter_supported`` (mix-up defence).
- ID tokens are verified: signature by a current IdP key (asymmetric algorithms only), ``iss``
  (Entra: the tenant-templated and v1 forms), ``aud`` contains our client id and ``azp`` is it
  when present or when there are several audiences, ``nonce``, ``exp`` and ``iat`` within
  ``SKEW_S``.
- Client authentication at the token endpoint: ``client_secret_basic``, ``client_secret_post``
  or ``private_key_jwt`` (RFC 7523; with an Entra certificate the ``x5t`` header names it).
- ID-JAGs for a signed-in user (Enterprise-Managed Authorization): an RFC 8693 token exchange at
  the token endpoint, presenting the user's ID token as the subject token, with the same client
  authentication (:meth:`OidcProvider.request_id_jag`).

Errors are :class:`IdpError` with a message safe to show the user and a private ``detail``;
tokens never appear in either.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bastion.idp.presets import ResolvedProvider

SKEW_S = 120
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ID_JAG_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id-jag"  # noqa: S105 - a URN
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN
ID_JAG_DEFAULT_TTL_S = 300
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ID_TOKEN_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
METADATA_TTL_S = 3600.0
JWKS_REFETCH_MIN_S = 30.0


class IdpError(Exception):
    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class IdpRefused(IdpError):
    """The IdP answered a token request with an OAuth error (RFC 6749 §5.2); ``error`` is its
    error code (only when it is a plain token, else ``"unknown"``), never its description."""

    def __init__(self, message: str, *, error: str, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.error = error


class InvalidIdpGrant(IdpRefused):
    """The IdP refused a refresh token (user disabled, session revoked): the session is over.
    (For a token exchange: it refused the subject token or the audience/resource pair.)"""

    def __init__(self, message: str, *, detail: str = "invalid_grant") -> None:
        super().__init__(message, error="invalid_grant", detail=detail)


@dataclass(frozen=True, slots=True)
class IssuedIdJag:
    """What an RFC 8693 exchange for an ID-JAG returned (RFC 8693 §2.2.1)."""

    assertion: str = field(repr=False)  # the ID-JAG (``access_token``)
    expires_in: int  # seconds (the IdP's ``expires_in``, else ``ID_JAG_DEFAULT_TTL_S``)
    scope: str | None  # as granted, when the IdP said


@dataclass(frozen=True, slots=True)
class TokenSet:
    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int | None = None  # of the access token
    access_token: str | None = field(default=None, repr=False)


class OidcProvider:
    def __init__(
        self, provider: ResolvedProvider, *, redirect_uri: str, http: httpx2.AsyncClient | None = None
    ) -> None:
        self.provider = provider
        self.redirect_uri = redirect_uri
        self._http = http or httpx2.AsyncClient(timeout=provider.config.timeout, follow_redirects=False)
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0

    @property
    def name(self) -> str:
        return self.provider.name

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- discovery ---------------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"accept": "application/json"})
        except httpx2.TimeoutException:
            raise IdpError(
                f"{self.provider.label} did not answer in time", detail=f"{what} {url}: timeout"
            ) from None
        except httpx2.HTTPError as exc:
            raise IdpError(
                f"{self.provider.label} cannot be reached", detail=f"{what} {url}: {exc!r}"
            ) from None
        if response.status_code != 200:
            raise IdpError(
                f"{self.provider.label} answered with an error",
                detail=f"{what} {url}: HTTP {response.status_code}",
            )
        try:
            body = response.json()
        except ValueError:
            raise IdpError(
                f"{self.provider.label} sent an unreadable answer", detail=f"{what} is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise IdpError(
                f"{self.provider.label} sent an unreadable answer", detail=f"{what} is not an object"
            )
        return body

    async def metadata(self) -> dict[str, Any]:
        now = time.time()
        if self._metadata is None or now - self._metadata_at > METADATA_TTL_S:
            doc = await self._get_json(self.provider.discovery_url, "discovery")
            for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str):
                    raise IdpError(
                        f"{self.provider.label}'s configuration is incomplete",
                        detail=f"discovery lacks {key}",
                    )
            self._metadata, self._metadata_at = doc, now
        return self._metadata

    async def _keys(self, *, refresh: bool = False) -> jwt.PyJWKSet:
        now = time.time()
        if self._jwks is None or (refresh and now - self._jwks_at > JWKS_REFETCH_MIN_S):
            meta = await self.metadata()
            body = await self._get_json(str(meta["jwks_uri"]), "jwks")
            try:
                self._jwks = jwt.PyJWKSet.from_dict(body)
            except jwt.PyJWTError as exc:
                raise IdpError(
                    f"{self.provider.label}'s signing keys are unusable", detail=repr(exc)
                ) from None
            self._jwks_at = now
        return self._jwks

    async def signing_key_count(self) -> int:
        """How many keys the IdP publishes (fetched afresh; for ``bastion idp test``)."""
        return len((await self._keys(refresh=True)).keys)

    # -- the authorization request -----------------------------------------------------------

    async def authorization_url(
        self,
        *,
        state: str,
        nonce: str,
        code_challenge: str,
        login_hint: str | None = None,
        resource: str | None = None,
    ) -> str:
        meta = await self.metadata()
        config = self.provider.config
        offline_scope = config.refresh and self.provider.offline == "scope"
        scopes = list(dict.fromkeys([*config.scopes, *(["offline_access"] if offline_scope else [])]))
        params = {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if config.refresh and self.provider.offline == "access_type":
            params |= {"access_type": "offline", "prompt": "consent"}
        if login_hint:
            params["login_hint"] = login_hint
        if resource and self.provider.send_resource:
            params["resource"] = resource
        endpoint = str(meta["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: the authorization response's ``iss`` must be this IdP's issuer."""
        meta = await self.metadata()
        if iss is None:
            if meta.get("authorization_response_iss_parameter_supported") is True:
                raise IdpError("The sign-in response is incomplete", detail="iss missing although advertised")
            return
        if not self._issuer_matches(iss, tid=None, strict_template=False):
            raise IdpError("The sign-in response came from another identity provider", detail=f"iss {iss!r}")

    # -- the token endpoint ------------------------------------------------------------------

    async def _token_request(
        self, form: dict[str, str], *, refused: str = "refused the sign-in"
    ) -> dict[str, Any]:
        meta = await self.metadata()
        endpoint = str(meta["token_endpoint"])
        config = self.provider.config
        auth: httpx2.BasicAuth | None = None
        method = config.token_endpoint_auth_method
        if method == "client_secret_basic":
            auth = httpx2.BasicAuth(config.client_id, config.client_secret or "")
        elif method == "client_secret_post":
            form |= {"client_id": config.client_id, "client_secret": config.client_secret or ""}
        else:
            form |= {
                "client_id": config.client_id,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self._client_assertion(endpoint),
            }
        try:
            headers = {"accept": "application/json"}
            if auth is not None:
                response = await self._http.post(endpoint, data=form, auth=auth, headers=headers)
            else:
                response = await self._http.post(endpoint, data=form, headers=headers)
        except httpx2.TimeoutException:
            raise IdpError(
                f"{self.provider.label} did not answer in time", detail="token endpoint timeout"
            ) from None
        except httpx2.HTTPError as exc:
            raise IdpError(
                f"{self.provider.label} cannot be reached", detail=f"token endpoint: {exc!r}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            described = body.get("error_description") if isinstance(body, dict) else None
            why = str(described)[:200] if isinstance(described, str) else ""
            detail = f"token endpoint HTTP {response.status_code} error={error!r} {why}"
            if error == "invalid_grant":
                raise InvalidIdpGrant(
                    f"{self.provider.label} no longer accepts this session",
                    detail=f"invalid_grant {why}".strip(),
                )
            if isinstance(error, str) and response.status_code != 200:
                code = error if _ERROR_CODE.fullmatch(error) else "unknown"
                raise IdpRefused(f"{self.provider.label} {refused}", error=code, detail=detail)
            raise IdpError(f"{self.provider.label} {refused}", detail=detail)
        return body

    def _client_assertion(self, audience: str) -> str:
        config = self.provider.config
        assert config.private_key_file is not None
        with open(config.private_key_file, "rb") as pem:
            key = serialization.load_pem_private_key(pem.read(), password=None)
        headers: dict[str, Any] = {}
        if config.certificate_file:
            with open(config.certificate_file, "rb") as pem:
                cert = x509.load_pem_x509_certificate(pem.read())
            headers["x5t"] = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()  # noqa: S303 - Entra names certificates by SHA-1 thumbprint
        now = int(time.time())
        claims = {
            "iss": config.client_id,
            "sub": config.client_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
        }
        if isinstance(key, rsa.RSAPrivateKey):
            alg = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            alg = "ES256"
        else:
            raise IdpError(
                "Bastion's key for the identity provider is unusable", detail="not an RSA or EC key"
            )
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    async def exchange_code(self, code: str, *, verifier: str) -> TokenSet:
        body = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            }
        )
        return _token_set(body)

    async def probe_client_authentication(self) -> str:
        """Present Bastion's client credentials with a made-up code: an IdP checks the client
        before the code, so ``invalid_grant`` means the credentials work and ``invalid_client``
        means they do not (for ``bastion idp test``)."""
        try:
            await self._token_request(
                {
                    "grant_type": "authorization_code",
                    "code": "bastion-probe-" + secrets.token_urlsafe(8),
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": secrets.token_urlsafe(48),
                }
            )
        except InvalidIdpGrant:
            return "invalid_grant"
        except IdpError as exc:
            return exc.detail
        return "accepted"

    async def refresh(self, refresh_token: str, *, scopes: tuple[str, ...] = ()) -> TokenSet:
        """``scopes``: ask for an access token for these (e.g. Entra's ``api://<app>/.default``)
        instead of the sign-in's own scopes."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scopes:
            form["scope"] = " ".join(scopes)
        return _token_set(await self._token_request(form))

    async def request_id_jag(
        self, subject_token: str, *, audience: str, resource: str | None, scopes: tuple[str, ...] = ()
    ) -> IssuedIdJag:
        """Exchange the user's ID token (issued to Bastion by this IdP) for an ID-JAG to present
        at the authorization server ``audience`` (RFC 8693; MCP EMA §4.3). The IdP's OAuth
        errors are :class:`IdpRefused` (``invalid_grant``: :class:`InvalidIdpGrant`)."""
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "requested_token_type": ID_JAG_TOKEN_TYPE,
            "subject_token": subject_token,
            "subject_token_type": ID_TOKEN_TYPE,
            "audience": audience,
        }
        if resource:
            form["resource"] = resource
        if scopes:
            form["scope"] = " ".join(scopes)
        body = await self._token_request(form, refused="refused to issue an ID-JAG")
        unreadable = f"{self.provider.label} sent an unusable ID-JAG answer"
        issued_type = body.get("issued_token_type")
        if issued_type != ID_JAG_TOKEN_TYPE:
            raise IdpError(unreadable, detail=f"issued_token_type {str(issued_type)[:100]!r}")
        assertion = body.get("access_token")
        if not isinstance(assertion, str) or not assertion:
            raise IdpError(unreadable, detail="no access_token")
        expires_in = body.get("expires_in", ID_JAG_DEFAULT_TTL_S)
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise IdpError(unreadable, detail=f"expires_in {str(expires_in)[:40]!r}")
        scope = body.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise IdpError(unreadable, detail="scope is not a string")
        return IssuedIdJag(assertion=assertion, expires_in=int(expires_in), scope=scope)

    # -- the ID token ------------------------------------------------------------------------

    async def verify_id_token(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise IdpError("The identity provider sent an unreadable ID token", detail="not a JWS") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ID_TOKEN_ALGS:
            raise IdpError("The identity provider's ID token is not acceptable", detail=f"alg {alg!r}")
        key = await self._key(kid)
        config = self.provider.config
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=[str(alg)],
                audience=config.client_id,
                leeway=SKEW_S,
                options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_iss": False},
            )
        except jwt.PyJWTError as exc:
            raise IdpError(
                "The identity provider's ID token is not valid", detail=f"{type(exc).__name__}: {exc}"
            ) from None
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat > time.time() + SKEW_S:
            raise IdpError("The identity provider's ID token is not valid", detail="iat in the future")
        if not self._issuer_matches(str(claims["iss"]), tid=claims.get("tid"), strict_template=True):
            raise IdpError(
                "The ID token was issued by another identity provider", detail=f"iss {claims['iss']!r}"
            )
        tenants = config.allowed_tenants
        if tenants and claims.get("tid") not in tenants:
            raise IdpError(
                "Your organisation is not allowed to sign in here", detail=f"tid {claims.get('tid')!r}"
            )
        aud = claims["aud"]
        azp = claims.get("azp")
        if (azp is not None or (isinstance(aud, list) and len(aud) > 1)) and azp != config.client_id:
            raise IdpError("The ID token was issued to another application", detail=f"azp {azp!r}")
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise IdpError("The sign-in response does not belong to this sign-in", detail="nonce mismatch")
        return claims

    async def _key(self, kid: object) -> jwt.PyJWK:
        for refresh in (False, True):
            keyset = await self._keys(refresh=refresh)
            for key in keyset.keys:
                if kid is None or key.key_id == kid:
                    return key
        raise IdpError("The ID token was signed with an unknown key", detail=f"kid {kid!r}")

    def _issuer_matches(self, iss: str, *, tid: object, strict_template: bool) -> bool:
        expected = str((self._metadata or {}).get("issuer", ""))
        if iss == expected:
            return True
        if not self.provider.entra_issuers:
            return False
        # Entra multi-tenant discovery says https://login.microsoftonline.com/{tenantid}/v2.0
        if "{tenantid}" in expected:
            if isinstance(tid, str) and tid:
                return iss == expected.replace("{tenantid}", tid)
            return not strict_template and iss.startswith(expected.split("{tenantid}", 1)[0])
        # v1 tokens of the same tenant: https://sts.windows.net/<tid>/ (the tenant is a whole path
        # segment of the configured issuer, not any substring of it)
        return (
            isinstance(tid, str)
            and bool(tid)
            and iss == f"https://sts.windows.net/{tid}/"
            and tid in urlsplit(expected).path.split("/")
        )


def _token_set(body: dict[str, Any]) -> TokenSet:
    id_token, refresh_token, expires_in = (
        body.get("id_token"),
        body.get("refresh_token"),
        body.get("expires_in"),
    )
    access_token = body.get("access_token")
    return TokenSet(
        id_token=id_token if isinstance(id_token, str) else None,
        refresh_token=refresh_token if isinstance(refresh_token, str) else None,
        expires_in=int(expires_in) if isinstance(expires_in, int | float) else None,
        access_token=access_token if isinstance(access_token, str) else None,
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


__all__ = [
    "ID_JAG_TOKEN_TYPE",
    "ID_TOKEN_TYPE",
    "TOKEN_EXCHANGE",
    "IdpError",
    "IdpRefused",
    "InvalidIdpGrant",
    "IssuedIdJag",
    "OidcProvider",
    "TokenSet",
    "pkce_pair",
]
