// Token exchanges of the test IdP (tests/node/idp.mjs, which documents the switches): what an
// upstream token exchange by Bastion (`auth: {type: token_exchange}`) meets at Keycloak or
// Microsoft Entra ID.
//
//   * RFC 8693 token exchange (token_exchange): grant_type
//     urn:ietf:params:oauth:grant-type:token-exchange, with client authentication;
//     requested_token_type the access-token or jwt type (default access token), subject_token an
//     ID token (subject_token_type id_token) or a JWT access token (access_token) this provider
//     issued to the authenticated client (aud = its client id or api://<client id>), unexpired,
//     for an enabled user; audience (else resource) required. The answer: a JWT access token
//     (RS256 with the provider's key, typ at+jwt; iss, sub = the user, aud, client_id, azp, scope,
//     resource, jti, iat, exp), issued_token_type, token_type Bearer, expires_in.
//   * Entra on-behalf-of (obo): grant_type urn:ietf:params:oauth:grant-type:jwt-bearer,
//     requested_token_use=on_behalf_of, assertion = a JWT access token this provider issued whose
//     aud is the requesting client (its id or api://<its id>), scope `<api>/.default` or
//     `<api>/<permission>`: a JWT access token for <api> (aud) with `scp` (and `scope`) = the
//     permissions (`.default`: user_impersonation), like Entra's.
//   * API scopes on refresh (either switch): a refresh_token grant whose scope names an API
//     (`<api>/.default`, or any api:// scope) gets, as from Entra, a JWT access token for that API
//     (aud <api>, scp) instead of the userinfo one; the refresh itself (rotation, invalid_grant for
//     a disabled user) is oidc-provider's.
import crypto from 'node:crypto';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const LOGGED = ['grant_type', 'requested_token_type', 'subject_token_type', 'audience', 'resource', 'scope',
  'requested_token_use'];

const b64json = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

function headerOf(token) {
  try {
    return JSON.parse(Buffer.from(String(token).split('.')[0], 'base64url').toString('utf8'));
  } catch {
    return {};
  }
}

// The API an Entra-style scope names: `api://app/.default` → api://app; `api://app/read` → api://app.
function apiOf(scope) {
  if (scope.endsWith('/.default')) return { api: scope.slice(0, -'/.default'.length), permission: 'user_impersonation' };
  if (scope.startsWith('api://')) {
    const at = scope.lastIndexOf('/');
    if (at > 'api://'.length) return { api: scope.slice(0, at), permission: scope.slice(at + 1) };
  }
  return undefined;
}

export function exchanges({ issuer, kid, signingKey, settings, users, loginOfSub, ownJwtClaims, refuse }) {
  const requests = [];

  function mint({ sub, aud, scope, clientId, ttl, extra = {} }) {
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss: issuer, sub, aud, client_id: clientId, azp: clientId, jti: crypto.randomUUID(), iat: now, exp: now + ttl,
      ...(scope ? { scope } : {}), ...extra,
    };
    const input = `${b64json({ alg: 'RS256', typ: 'at+jwt', kid })}.${b64json(payload)}`;
    return `${input}.${crypto.sign('sha256', Buffer.from(input), signingKey).toString('base64url')}`;
  }

  function enabledUser(sub) {
    const login = loginOfSub(sub);
    const user = login === undefined ? undefined : users.get(login);
    if (!user) throw refuse('invalid_grant', 'unknown user');
    if (user.disabled) throw refuse('invalid_grant', 'AADSTS50057: The user account is disabled.');
    return user;
  }

  // A token this provider signed for `clientId`: an ID token, or (accessToken) a JWT access token.
  function subjectClaims(token, clientId, accessToken) {
    const claims = ownJwtClaims(token);
    if (!claims || claims.iss !== issuer) throw refuse('invalid_grant', 'the subject token was not issued here');
    if ((headerOf(token).typ === 'at+jwt') !== accessToken) {
      throw refuse('invalid_grant', `the subject token is not ${accessToken ? 'an access' : 'an ID'} token`);
    }
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(clientId) && !aud.includes(`api://${clientId}`)) {
      throw refuse('invalid_grant', 'AADSTS50013: Assertion audience does not match the Client app presenting the assertion.');
    }
    if (typeof claims.exp !== 'number' || claims.exp <= Math.floor(Date.now() / 1000)) {
      throw refuse('invalid_grant', 'AADSTS500133: Assertion is not within its valid time range.');
    }
    enabledUser(claims.sub);
    return claims;
  }

  function record(ctx, presented) {
    const { client, params } = ctx.oidc;
    const logged = Object.fromEntries(LOGGED.filter((k) => params[k] !== undefined).map((k) => [k, params[k]]));
    requests.push({ ...logged, client_id: client.clientId, subject_token_present: Boolean(presented) });
    if (settings.exchange_error) {
      throw refuse(settings.exchange_error, settings.exchange_error_description ?? 'refused by an administrator');
    }
  }

  function allowed(audience) {
    const audiences = settings.exchange_audiences;
    return !Array.isArray(audiences) || audiences.includes(audience);
  }

  function lifetimes() {
    const ttl = Number(settings.exchange_ttl);
    return { ttl, expires_in: settings.exchange_expires_in ?? ttl };
  }

  async function tokenExchange(ctx) {
    const { client, params } = ctx.oidc;
    record(ctx, params.subject_token);
    const requested = params.requested_token_type ?? ACCESS_TOKEN_TYPE;
    if (![ACCESS_TOKEN_TYPE, JWT_TYPE].includes(requested)) {
      throw refuse('invalid_request', 'requested_token_type must be the access token or jwt type');
    }
    if (![ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE].includes(params.subject_token_type)) {
      throw refuse('invalid_request', 'subject_token_type must be the id_token or access_token type');
    }
    if (!params.subject_token) throw refuse('invalid_request', 'subject_token is required');
    const resource = Array.isArray(params.resource) ? params.resource : [params.resource].filter(Boolean);
    if (resource.length > 1) throw refuse('invalid_target', 'only one resource may be asked for');
    const audience = params.audience ?? resource[0];
    if (!audience) throw refuse('invalid_request', 'audience or resource is required');
    if (!allowed(audience)) throw refuse('invalid_target', 'no token for this audience');
    const claims = subjectClaims(params.subject_token, client.clientId, params.subject_token_type === ACCESS_TOKEN_TYPE);
    const { ttl, expires_in } = lifetimes();
    const extra = resource.length ? { resource: resource[0] } : {};
    ctx.body = {
      access_token: mint({ sub: claims.sub, aud: audience, scope: params.scope, clientId: client.clientId, ttl, extra }),
      issued_token_type: requested,
      token_type: 'Bearer',
      expires_in,
      ...(params.scope ? { scope: params.scope } : {}),
    };
  }

  async function onBehalfOf(ctx) {
    const { client, params } = ctx.oidc;
    record(ctx, params.assertion);
    if (params.requested_token_use !== 'on_behalf_of') {
      throw refuse('invalid_request', 'AADSTS70003: requested_token_use must be on_behalf_of');
    }
    if (!params.assertion) throw refuse('invalid_request', 'AADSTS900144: The request body must contain: assertion');
    if (!params.scope) throw refuse('invalid_request', 'AADSTS900144: The request body must contain: scope');
    const wanted = params.scope.split(' ').filter(Boolean).map(apiOf);
    const apis = new Set(wanted.map((w) => w?.api));
    if (wanted.some((w) => !w) || apis.size !== 1) {
      throw refuse('invalid_scope', 'AADSTS70011: The provided value for the input parameter scope is not valid.');
    }
    const api = wanted[0].api;
    if (!allowed(api)) throw refuse('invalid_resource', 'AADSTS500011: The resource principal was not found.');
    const claims = subjectClaims(params.assertion, client.clientId, true);
    const scp = [...new Set(wanted.map((w) => w.permission))].join(' ');
    const { ttl, expires_in } = lifetimes();
    ctx.body = {
      token_type: 'Bearer',
      scope: params.scope,
      expires_in,
      ext_expires_in: expires_in,
      access_token: mint({ sub: claims.sub, aud: api, scope: scp, clientId: client.clientId, ttl, extra: { scp } }),
    };
  }

  // A refresh_token grant's form with the API scopes taken out (oidc-provider refreshes with the
  // rest), and which API they name; undefined when they name none.
  function apiScopes(form) {
    const params = new URLSearchParams(form);
    const scopes = (params.get('scope') ?? '').split(' ').filter(Boolean);
    const api = scopes.filter((s) => apiOf(s));
    if (!api.length) return undefined;
    const rest = scopes.filter((s) => !apiOf(s));
    if (rest.length) params.set('scope', rest.join(' ')); else params.delete('scope');
    const first = apiOf(api[0]);
    const scp = [...new Set(api.map((s) => apiOf(s).permission))].join(' ');
    return { form: params.toString(), api: first.api, scope: api.join(' '), scp };
  }

  // The refresh answer with an access token for that API (`grant`: apiScopes' result + sub, clientId).
  function apiAnswer(body, grant) {
    const ttl = Number(settings.access_token_ttl);
    const token = mint({ sub: grant.sub, aud: grant.api, scope: grant.scp, clientId: grant.clientId, ttl, extra: { scp: grant.scp } });
    return { ...body, access_token: token, token_type: 'Bearer', scope: grant.scope, expires_in: ttl };
  }

  return { requests, tokenExchange, onBehalfOf, apiScopes, apiAnswer };
}
