// A real OpenID Provider for Bastion's enterprise-IdP federation tests: panva's oidc-provider
// (pinned in package.json), configured like Microsoft Entra ID:
//   * no dynamic client registration (no registration_endpoint) unless `registration`, static confidential clients
//     (client_secret_basic / client_secret_post / private_key_jwt), PKCE (S256) required;
//   * a tenant-style issuer path (http://127.0.0.1:PORT/tenant-a/v2.0); discovery at
//     <issuer>/.well-known/openid-configuration, like Entra;
//   * ID tokens carry sub, email, name, preferred_username, groups, roles (app roles), tid, oid,
//     ver, azp and nonce; groups overage as `_claim_names`/`_claim_sources`;
//   * optionally (reject_resource) any RFC 8707 `resource` parameter is refused with
//     invalid_target / AADSTS9010010, at the authorization and at the token endpoint;
//   * refresh tokens when `offline_access` is asked for (without needing prompt=consent, like
//     Entra); a user disabled through the admin endpoint can no longer refresh (invalid_grant,
//     AADSTS50057).
// Plain HTML sign-in and consent pages (fields `login`, `password`; a consent form; a
// `<a id="cancel">` link that answers access_denied) that a headless form driver can submit.
//
// Configured by one JSON environment variable, IDP_CONFIG:
//   port                 TCP port on 127.0.0.1 (required)
//   issuer               default http://127.0.0.1:<port><issuer_path>
//   issuer_path          default "" (used only when issuer is not given)
//   clients              [{client_id, client_secret | jwks, redirect_uris, token_endpoint_auth_method, ...}]
//   users                {login: {sub, email, name, groups, roles, tid, oid, password, disabled, groups_overage}}
//   tenant_id            default `tid` for users without one
//   reject_resource      default true
//   resource_scope       scopes of the JWT access token minted for a `resource` (reject_resource=false)
//   groups_overage       [login, ...] users whose groups come as _claim_names/_claim_sources
//   id_token_ttl         seconds (default 3600); refresh_token_ttl likewise (default 14 days)
//   refresh              issue refresh tokens for offline_access (default true)
//   consent              show the consent page (default true); false = admin-consented app
//   scopes               extra scope names to accept
//   client_auth_methods  token endpoint auth methods (default Entra's: post, private_key_jwt, basic)
//   delay_ms             sleep before answering delay_endpoints (default discovery, jwks, token)
//   authorization_response_iss  RFC 9207 `iss` in the authorization response (default true)
//   id_token_claims      {claim: value|null} overwrite/remove claims of issued ID tokens
//   id_token_header      {field: value} overwrite JOSE header fields (e.g. kid)
//   id_token_bad_signature  sign ID tokens with a key that is not in the JWKS (same kid)
//   id_token_time_offset    seconds added to iat and exp of issued ID tokens
//   id_jag               RFC 8693 token exchange for ID-JAGs (MCP Enterprise-Managed
//                        Authorization), off unless this is set or the environment has ID_JAG=1:
//                        true, or {client_ids: {audience: client_id}, ttl, audiences}
//   id_jag_client_ids    {audience: client id at that authorization server} for the ID-JAG's
//                        `client_id` claim (default: the authenticated client's id here)
//   id_jag_ttl           seconds an ID-JAG lives (default 300)
//   id_jag_audiences     [issuer, ...] audiences an ID-JAG may be asked for (default: any)
//   id_jag_error         refuse every ID-JAG exchange with this OAuth error code (e.g. invalid_grant)
//   id_jag_error_description  its error_description
//   token_exchange       (start only) a plain RFC 8693 token exchange (tests/node/idp_exchange.mjs):
//                        an ID token or JWT access token this provider issued to the client, for a
//                        JWT access token with aud = the requested audience (else resource), sub =
//                        the user, scope = the requested scope; off unless true (requests asking for
//                        the id-jag type still go to the ID-JAG exchange when that is on)
//   obo                  (start only) Entra's on-behalf-of flow (idp_exchange.mjs): grant_type
//                        jwt-bearer, requested_token_use=on_behalf_of, assertion = an access token
//                        this provider issued whose aud is the requesting client (id or api://id),
//                        scope <api>/.default → a JWT access token for <api> (aud, scp); off unless true
//                        Either switch also gives refresh_token grants Entra's API scopes: scope
//                        `<api>/.default` (or an api:// scope) → a JWT access token for <api>
//   exchange_ttl         seconds a token from those exchanges lives (default 3600)
//   exchange_expires_in  the expires_in its answer reports (default exchange_ttl; a longer one is a
//                        lie that lets a test see an upstream refuse a token Bastion still holds)
//   exchange_audiences   [audience, ...] those exchanges may issue tokens for (default any):
//                        others invalid_target (OBO: invalid_resource)
//   exchange_error       refuse every token_exchange / obo request with this OAuth error code
//   exchange_error_description  its error_description
// SaaS-provider switches (a second instance plays a SaaS OAuth provider; their defaults keep the
// Entra-like behaviour above). Plain OAuth works too: scope without openid (then no nonce, no ID
// token), e.g. "crm:read crm:write offline_access" with resource_scope "crm:read crm:write".
//   default_resource     resource indicator assumed when the client sends none (RFC 8707,
//                        resourceIndicators.defaultResource): with reject_resource=false every
//                        access token is then for it (aud), scopes filtered to resource_scope
//   access_token_format  "jwt" (default: RS256, verifiable with the JWKS; sub, scope, aud,
//                        client_id, iss, exp, iat, jti) or "opaque" (introspectable) for
//                        access tokens minted for a resource
//   access_token_ttl     seconds (default 3600), changeable at run time; short values (2) work
//   refresh_rotation     true (default): a new refresh token on every refresh, the old one is
//                        consumed (reusing it revokes the grant); false: the same refresh token
//                        stays valid and refresh responses carry no refresh_token
//   refresh_error        answer every refresh_token grant with this instead of refreshing:
//                        an OAuth error code ("invalid_grant": 400 JSON; refresh_error_description
//                        its description) or {status, body?} (e.g. {"status": 503}: that status
//                        with a plain-text body) or {status, error, error_description} (JSON)
//   introspection        (start only) RFC 7662 introspection endpoint on; opaque tokens only
//   introspection_clients  client ids allowed to introspect (default: any confidential client;
//                        others get {"active": false})
//   revocation           (start only) RFC 7009 revocation endpoint on (a client revokes its own)
//   oauth_metadata       (start only) also serve the discovery document at the RFC 8414
//                        location <origin>/.well-known/oauth-authorization-server<issuer path>
//   registration         (start only) RFC 7591 dynamic client registration on (default off;
//                        open registration, no initial access token)
// The settings from `reject_resource` on (except those marked start only) can also be changed at
// run time (POST /__admin/settings).
//
// The ID-JAG exchange (grant_type urn:ietf:params:oauth:grant-type:token-exchange, with client
// authentication): requested_token_type must be the id-jag type, subject_token an ID token this
// provider signed, issued to the authenticated client (aud), unexpired, for an enabled user, and
// audience given; the answer is an ID-JAG signed with the provider's key (typ oauth-id-jag+jwt;
// iss, sub, aud = audience, client_id, jti, iat, exp, resource, scope, email). Clients are allowed
// the grant by default when it is on; discovery then lists the id-jag type under
// identity_chaining_requested_token_types_supported.
//
// Admin endpoints (origin root, not under the issuer path):
//   GET  /__admin/health                   {ok, issuer}
//   GET  /__admin/settings                 current mutable settings
//   POST /__admin/settings                 JSON object merged into them
//   POST /__admin/users/<login>/disable    user can neither sign in nor refresh
//   POST /__admin/users/<login>/enable
//   PUT  /__admin/users/<login>            JSON claims: add or replace a user
//   POST /__admin/users/<login>/revoke     revoke all the user's grants: their refresh tokens
//                                          get invalid_grant, opaque access tokens go inactive
//                                          (JWT access tokens stay valid until they expire)
//   GET  /__admin/grants                   token endpoint requests by grant_type:
//                                          {requests: {grant_type: n}, succeeded: {grant_type: n}}
//   POST /__admin/grants/reset             zero those counters
//   GET  /__admin/id-jag/requests          the ID-JAG exchanges received (form fields without
//                                          the subject token, plus the authenticated client_id)
//   GET  /__admin/exchange/requests        the token_exchange / obo requests received, likewise
//                                          (no subject token, no assertion)
//
// Prints `READY <issuer>` on stdout once listening.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

import { exchanges, JWT_BEARER } from './idp_exchange.mjs';

const config = JSON.parse(process.env.IDP_CONFIG ?? '{}');
if (!config.port) throw new Error('IDP_CONFIG.port is required');
const PORT = Number(config.port);
const BASE = `http://127.0.0.1:${PORT}`;
const ISSUER = config.issuer ?? `${BASE}${config.issuer_path ?? ''}`;
const PREFIX = new URL(ISSUER).pathname.replace(/\/$/, '');

const users = new Map(Object.entries(config.users ?? {}).map(([login, u]) => [login, { ...u }]));
const ID_JAG = process.env.ID_JAG === '1' || Boolean(config.id_jag);
const EXCHANGE = config.token_exchange === true;
const OBO = config.obo === true;
const idJagConfig = config.id_jag && typeof config.id_jag === 'object' ? config.id_jag : {};
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_JAG_TYPE = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const idJagRequests = [];
const overage = new Set(config.groups_overage ?? []);

// Run-time switches (POST /__admin/settings).
const settings = {
  reject_resource: config.reject_resource ?? true,
  resource_scope: config.resource_scope ?? 'mcp:read mcp:write',
  consent: config.consent ?? true,
  refresh: config.refresh ?? true,
  delay_ms: config.delay_ms ?? 0,
  delay_endpoints: config.delay_endpoints ?? ['discovery', 'jwks', 'token'],
  authorization_response_iss: config.authorization_response_iss ?? true,
  id_token_claims: config.id_token_claims ?? {},
  id_token_header: config.id_token_header ?? {},
  id_token_bad_signature: config.id_token_bad_signature ?? false,
  id_token_time_offset: config.id_token_time_offset ?? 0,
  id_jag_client_ids: config.id_jag_client_ids ?? idJagConfig.client_ids ?? {},
  id_jag_ttl: config.id_jag_ttl ?? idJagConfig.ttl ?? 300,
  id_jag_audiences: config.id_jag_audiences ?? idJagConfig.audiences ?? null,
  id_jag_error: config.id_jag_error ?? null,
  id_jag_error_description: config.id_jag_error_description ?? null,
  default_resource: config.default_resource ?? null,
  access_token_format: config.access_token_format ?? 'jwt',
  access_token_ttl: config.access_token_ttl ?? 3600,
  refresh_rotation: config.refresh_rotation ?? true,
  refresh_error: config.refresh_error ?? null,
  refresh_error_description: config.refresh_error_description ?? null,
  introspection_clients: config.introspection_clients ?? null,
  exchange_ttl: config.exchange_ttl ?? 3600,
  exchange_expires_in: config.exchange_expires_in ?? null,
  exchange_audiences: config.exchange_audiences ?? null,
  exchange_error: config.exchange_error ?? null,
  exchange_error_description: config.exchange_error_description ?? null,
};
const INTROSPECTION = Boolean(config.introspection);
const REVOCATION = Boolean(config.revocation);
const OAUTH_METADATA = Boolean(config.oauth_metadata);
const REGISTRATION = Boolean(config.registration);

// Token endpoint requests by grant_type (GET /__admin/grants).
const grantCounts = { requests: {}, succeeded: {} };
// Grant ids by account id (sub), for POST /__admin/users/<login>/revoke.
const grantsOf = new Map();

// ------------------------------------------------------------------------------ keys
function rsaKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey;
}
const signingKey = rsaKey();
const KID = crypto.randomBytes(8).toString('hex');
const signingJwk = { ...signingKey.export({ format: 'jwk' }), kid: KID, alg: 'RS256', use: 'sig' };
let rogueKey; // for id_token_bad_signature: a key the JWKS does not have

function b64json(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}
function fromB64json(s) {
  return JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
}

// Rewrite an ID token the provider issued (tampering switches), re-signed with RS256.
function tamperIdToken(token) {
  const s = settings;
  const active = s.id_token_bad_signature || s.id_token_time_offset
    || Object.keys(s.id_token_claims).length || Object.keys(s.id_token_header).length;
  if (!active) return token;
  const [h, p] = token.split('.');
  const header = { ...fromB64json(h), alg: 'RS256' };
  const payload = fromB64json(p);
  for (const [k, v] of Object.entries(s.id_token_header)) {
    if (v === null) delete header[k]; else header[k] = v;
  }
  for (const [k, v] of Object.entries(s.id_token_claims)) {
    if (v === null) delete payload[k]; else payload[k] = v;
  }
  if (s.id_token_time_offset) {
    for (const k of ['iat', 'exp', 'nbf', 'auth_time']) {
      if (typeof payload[k] === 'number') payload[k] += Number(s.id_token_time_offset);
    }
  }
  const input = `${b64json(header)}.${b64json(payload)}`;
  const key = s.id_token_bad_signature ? (rogueKey ??= rsaKey()) : signingKey;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

// ------------------------------------------------------------------------------ accounts
const NOT_CLAIMS = new Set(['password', 'disabled', 'groups_overage']);
const STANDARD_CLAIMS = ['sub', 'email', 'email_verified', 'name', 'preferred_username', 'groups', 'roles',
  'tid', 'oid', 'ver', 'azp'];
const claimNames = new Set(STANDARD_CLAIMS);
for (const u of users.values()) Object.keys(u).filter((k) => !NOT_CLAIMS.has(k)).forEach((k) => claimNames.add(k));

function oidFor(login) {
  const h = crypto.createHash('sha256').update(`oid:${login}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
function subOf(login, user) {
  return user.sub ?? login;
}
function loginOfSub(sub) {
  for (const [login, u] of users) if (subOf(login, u) === sub) return login;
  return undefined;
}

function claimsOf(login, user, use, client) {
  const c = {};
  for (const [k, v] of Object.entries(user)) if (!NOT_CLAIMS.has(k)) c[k] = v;
  c.sub = subOf(login, user);
  c.oid ??= oidFor(login);
  if (config.tenant_id && c.tid === undefined) c.tid = config.tenant_id;
  c.preferred_username ??= c.email ?? login;
  c.ver = '2.0';
  if (use === 'id_token' && client) c.azp = client.clientId;
  if (user.groups_overage || overage.has(login)) {
    delete c.groups;
    c._claim_names = { groups: 'src1' };
    c._claim_sources = { src1: { endpoint: `https://graph.microsoft.com/v1.0/users/${c.oid}/getMemberObjects` } };
  }
  return c;
}

async function findAccount(ctx, sub) {
  const login = loginOfSub(sub);
  const user = login === undefined ? undefined : users.get(login);
  if (!user) return undefined;
  if (user.disabled) {
    if (ctx?.oidc?.route === 'token') {
      throw new errors.CustomOIDCProviderError('invalid_grant', 'AADSTS50057: The user account is disabled.');
    }
    return undefined; // an existing session no longer counts: back to the sign-in page
  }
  const client = ctx?.oidc?.client;
  return { accountId: sub, claims: async (use) => claimsOf(login, user, use, client) };
}

// ------------------------------------------------------------------------------ provider
const AADSTS9010010 = "AADSTS9010010: The resource parameter provided in the request doesn't match with the requested scopes.";

const clients = (config.clients ?? []).map((c) => {
  const out = Object.fromEntries(Object.entries(c).filter(([k]) => !k.startsWith('_') && k !== 'private_key_pem'));
  out.grant_types ??= ['authorization_code', 'refresh_token', ...(ID_JAG || EXCHANGE ? [TOKEN_EXCHANGE] : []),
    ...(OBO ? [JWT_BEARER] : [])];
  out.response_types ??= ['code'];
  out.token_endpoint_auth_method ??= out.jwks ? 'private_key_jwt' : 'client_secret_basic';
  return out;
});

const provider = new Provider(ISSUER, {
  clients,
  jwks: { keys: [signingJwk] },
  findAccount,
  claims: {
    openid: [...claimNames],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  conformIdTokenClaims: false, // Entra puts the claims in the ID token, not only in userinfo
  scopes: ['openid', 'offline_access', 'email', 'profile', ...(config.scopes ?? [])],
  responseTypes: ['code'],
  clientAuthMethods: config.client_auth_methods ?? ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
  pkce: { required: () => true },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  ttl: {
    IdToken: Number(config.id_token_ttl ?? 3600),
    AccessToken: () => Number(settings.access_token_ttl),
    RefreshToken: Number(config.refresh_token_ttl ?? 14 * 86400),
    Grant: 14 * 86400,
    Session: 86400,
    Interaction: 600,
  },
  // Entra hands out a new refresh token on every refresh; refresh_rotation=false: providers that don't
  rotateRefreshToken: () => Boolean(settings.refresh_rotation),
  issueRefreshToken: async (ctx, client, code) => settings.refresh
    && client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  interactions: { url: (ctx, interaction) => `${PREFIX}/interaction/${interaction.uid}` },
  features: {
    registration: { enabled: REGISTRATION }, // off like Entra (no registration_endpoint) unless asked
    devInteractions: { enabled: false },
    introspection: {
      enabled: INTROSPECTION,
      allowedPolicy: async (ctx, client) => client.clientAuthMethod !== 'none'
        && (!Array.isArray(settings.introspection_clients)
          || settings.introspection_clients.includes(client.clientId)),
    },
    revocation: {
      enabled: REVOCATION,
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => {
        const dflt = settings.default_resource ?? undefined;
        if (oneOf) return oneOf.includes(dflt) ? dflt : undefined;
        return dflt;
      },
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (settings.reject_resource) throw new errors.CustomOIDCProviderError('invalid_target', AADSTS9010010);
        return {
          scope: settings.resource_scope,
          audience: resource,
          accessTokenFormat: settings.access_token_format === 'opaque' ? 'opaque' : 'jwt',
          accessTokenTTL: Number(settings.access_token_ttl),
          ...(settings.access_token_format === 'opaque' ? {} : { jwt: { sign: { alg: 'RS256' } } }),
        };
      },
    },
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.saved', (grant) => {
  if (!grant.accountId) return;
  if (!grantsOf.has(grant.accountId)) grantsOf.set(grant.accountId, new Set());
  grantsOf.get(grant.accountId).add(grant.jti);
});

// Every grant of the account: tokens and codes of it destroyed, the grant itself too.
async function revokeAccount(accountId) {
  const ids = [...(grantsOf.get(accountId) ?? [])];
  await Promise.all(ids.map((id) => Promise.all([
    provider.AccessToken.revokeByGrantId(id),
    provider.RefreshToken.revokeByGrantId(id),
    provider.AuthorizationCode.revokeByGrantId(id),
    provider.Grant.adapter.destroy(id),
  ])));
  grantsOf.delete(accountId);
  return ids.length;
}

// ------------------------------------------------------------------------------ ID-JAG exchange
function refuse(error, description) {
  return new errors.CustomOIDCProviderError(error, description);
}

// The claims of a JWT this provider signed (RS256 with its current key), or undefined.
function ownJwtClaims(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = fromB64json(parts[0]);
    if (header.alg !== 'RS256' || (header.kid !== undefined && header.kid !== KID)) return undefined;
    const ok = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), signingKey,
      Buffer.from(parts[2], 'base64url'));
    return ok ? fromB64json(parts[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function idJagGrant(ctx) {
  const { client, params } = ctx.oidc;
  const subjectToken = params.subject_token;
  const logged = Object.fromEntries(['grant_type', 'requested_token_type', 'subject_token_type', 'audience',
    'resource', 'scope'].map((k) => [k, params[k]]));
  idJagRequests.push({ ...logged, client_id: client.clientId, subject_token_present: Boolean(subjectToken) });
  if (settings.id_jag_error) {
    throw refuse(settings.id_jag_error, settings.id_jag_error_description ?? 'refused by an administrator');
  }
  if (params.requested_token_type !== ID_JAG_TYPE) {
    throw refuse('invalid_request', `requested_token_type must be ${ID_JAG_TYPE}`);
  }
  if (params.subject_token_type !== ID_TOKEN_TYPE) {
    throw refuse('invalid_request', `subject_token_type must be ${ID_TOKEN_TYPE}`);
  }
  if (!subjectToken) throw refuse('invalid_request', 'subject_token is required');
  if (!params.audience) throw refuse('invalid_request', 'audience is required');
  const resource = params.resource;
  if (Array.isArray(resource) && resource.length !== 1) {
    throw refuse('invalid_target', 'only one resource may be asked for');
  }
  const claims = ownJwtClaims(subjectToken);
  const now = Math.floor(Date.now() / 1000);
  if (!claims) throw refuse('invalid_grant', 'the subject token is not an ID token signed here');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== ISSUER) throw refuse('invalid_grant', 'the subject token was issued elsewhere');
  if (!aud.includes(client.clientId)) {
    throw refuse('invalid_grant', 'Audience validation failed: the subject token was issued to another client');
  }
  if (typeof claims.exp !== 'number' || claims.exp <= now) throw refuse('invalid_grant', 'the subject token expired');
  const login = loginOfSub(claims.sub);
  const user = login === undefined ? undefined : users.get(login);
  if (!user) throw refuse('invalid_grant', 'unknown user');
  if (user.disabled) throw refuse('invalid_grant', 'AADSTS50057: The user account is disabled.');
  const audiences = settings.id_jag_audiences;
  if (Array.isArray(audiences) && !audiences.includes(params.audience)) {
    throw refuse('invalid_target', 'no ID-JAG for this audience');
  }
  const ttl = Number(settings.id_jag_ttl);
  const payload = {
    iss: ISSUER,
    sub: claims.sub,
    aud: params.audience,
    client_id: settings.id_jag_client_ids[params.audience] ?? client.clientId,
    jti: crypto.randomUUID(),
    iat: now,
    exp: now + ttl,
  };
  if (resource) payload.resource = Array.isArray(resource) ? resource[0] : resource;
  if (params.scope) payload.scope = params.scope;
  if (user.email) payload.email = user.email;
  if (claims.tid) payload.tenant = claims.tid;
  const input = `${b64json({ alg: 'RS256', typ: 'oauth-id-jag+jwt', kid: KID })}.${b64json(payload)}`;
  const jwt = `${input}.${crypto.sign('sha256', Buffer.from(input), signingKey).toString('base64url')}`;
  ctx.body = {
    issued_token_type: ID_JAG_TYPE,
    access_token: jwt,
    token_type: 'N_A',
    expires_in: ttl,
    ...(params.scope ? { scope: params.scope } : {}),
  };
}

const exchange = exchanges({
  issuer: ISSUER, kid: KID, signingKey, settings, users, loginOfSub, ownJwtClaims, refuse,
});
if (ID_JAG || EXCHANGE) {
  const tokenExchange = (ctx) => (EXCHANGE && !(ID_JAG && ctx.oidc.params.requested_token_type === ID_JAG_TYPE)
    ? exchange.tokenExchange(ctx) : idJagGrant(ctx));
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
    'subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope',
    'actor_token', 'actor_token_type',
  ], ['resource']);
}
if (OBO) provider.registerGrantType(JWT_BEARER, exchange.onBehalfOf, ['assertion', 'requested_token_use', 'scope']);
const providerCallback = provider.callback();

// ------------------------------------------------------------------------------ HTML pages
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

function page(res, status, title, body) {
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><main>
${body}
</main></body></html>`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(html),
  });
  res.end(html);
}

function loginPage(res, uid, details, error, status = 200) {
  const base = `${PREFIX}/interaction/${uid}`;
  const hint = details.params.login_hint ?? '';
  page(res, status, 'Sign in to your account', `<h1>Sign in</h1>
<p>to continue to <b>${esc(details.params.client_id)}</b></p>
${error ? `<p class="error" id="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="${esc(base)}/login" autocomplete="off">
<label>Email or login <input type="text" name="login" value="${esc(hint)}" required autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>
<p><a id="cancel" href="${esc(base)}/abort">Cancel</a></p>`);
}

function consentPage(res, uid, details) {
  const base = `${PREFIX}/interaction/${uid}`;
  const scopes = (details.params.scope ?? '').split(' ').filter(Boolean);
  page(res, 200, 'Permissions requested', `<h1>Permissions requested</h1>
<p><b>${esc(details.params.client_id)}</b> would like to:</p>
<ul>${scopes.map((s) => `<li>${esc(s)}</li>`).join('')}</ul>
<form method="post" action="${esc(base)}/confirm">
<input type="hidden" name="prompt" value="consent">
<button type="submit" name="accept" value="yes">Accept</button>
</form>
<p><a id="cancel" href="${esc(base)}/abort">Cancel</a></p>`);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function finishConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    page(res, 400, 'Sign-in error', `<h1>Sign-in error</h1><p id="error">${esc(err.error_description ?? err.message)}</p>`);
    return;
  }
  if (details.uid !== uid) {
    page(res, 400, 'Sign-in error', '<h1>Sign-in error</h1><p id="error">interaction mismatch</p>');
    return;
  }
  const prompt = details.prompt.name;
  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'AADSTS65004: User declined to consent to access the app.',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (action === '' && req.method === 'GET') {
    if (prompt === 'login') return loginPage(res, uid, details);
    if (prompt === 'consent') {
      if (!settings.consent) return finishConsent(req, res, details);
      return consentPage(res, uid, details);
    }
    return page(res, 501, 'Not implemented', `<p id="error">prompt ${esc(prompt)}</p>`);
  }
  if (req.method !== 'POST') return page(res, 405, 'Method not allowed', '<p id="error">POST only</p>');
  const form = new URLSearchParams(await readBody(req));
  if (action === 'login' && prompt === 'login') {
    const login = (form.get('login') ?? '').trim();
    const user = users.get(login);
    if (!user) return loginPage(res, uid, details, "AADSTS50034: The user account doesn't exist in this directory.");
    if (user.password !== undefined && form.get('password') !== user.password) {
      return loginPage(res, uid, details, 'AADSTS50126: Invalid username or password.');
    }
    if (user.disabled) return loginPage(res, uid, details, 'AADSTS50057: The user account is disabled.');
    await provider.interactionFinished(req, res, { login: { accountId: subOf(login, user) } }, {
      mergeWithLastSubmission: false,
    });
    return undefined;
  }
  if (action === 'confirm' && prompt === 'consent') return finishConsent(req, res, details);
  return page(res, 400, 'Sign-in error', `<p id="error">unexpected ${esc(action)} for prompt ${esc(prompt)}</p>`);
}

// ------------------------------------------------------------------------------ plumbing
function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// Buffer what the provider writes and let `transform` rewrite a JSON body.
function rewriteJson(res, transform) {
  const chunks = [];
  const end = res.end.bind(res);
  res.write = (chunk, encoding) => {
    if (chunk) chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? encoding : undefined));
    return true;
  };
  res.end = (chunk, encoding, cb) => {
    if (chunk && typeof chunk !== 'function') {
      chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? encoding : undefined));
    }
    let body = Buffer.concat(chunks);
    try {
      const out = transform(JSON.parse(body.toString('utf8')));
      if (out !== undefined) body = Buffer.from(JSON.stringify(out));
    } catch {
      // not JSON: pass through untouched
    }
    if (!res.headersSent) res.setHeader('content-length', body.length);
    return end(body, typeof cb === 'function' ? cb : undefined);
  };
}

// RFC 9207 switched off: drop `iss` from redirects back to clients.
function stripIssFromRedirects(res) {
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name, value) => {
    if (String(name).toLowerCase() === 'location' && typeof value === 'string' && !value.startsWith(BASE)) {
      try {
        const u = new URL(value);
        if (u.searchParams.has('iss')) {
          u.searchParams.delete('iss');
          return setHeader(name, u.href);
        }
      } catch {
        // relative location: ours
      }
    }
    return setHeader(name, value);
  };
}

// refresh_error: the answer to a refresh_token grant while it is set.
function refreshError(res) {
  const e = settings.refresh_error;
  if (typeof e === 'string') {
    return sendJson(res, 400, { error: e, error_description: settings.refresh_error_description ?? 'refused by the provider' });
  }
  const status = Number(e.status ?? 400);
  if (e.error) return sendJson(res, status, { error: e.error, error_description: e.error_description ?? settings.refresh_error_description ?? 'refused by the provider' });
  const body = String(e.body ?? http.STATUS_CODES[status] ?? 'error');
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  return undefined;
}

function endpointOf(sub) {
  if (sub === '/.well-known/openid-configuration') return 'discovery';
  if (sub === '/jwks') return 'jwks';
  if (sub === '/token') return 'token';
  if (sub === '/auth' || sub.startsWith('/auth/')) return 'authorization';
  return undefined;
}

async function admin(req, res, path) {
  if (path === '/__admin/health') return sendJson(res, 200, { ok: true, issuer: ISSUER });
  if (path === '/__admin/id-jag/requests') return sendJson(res, 200, idJagRequests);
  if (path === '/__admin/exchange/requests') return sendJson(res, 200, exchange.requests);
  if (path === '/__admin/grants') return sendJson(res, 200, grantCounts);
  if (path === '/__admin/grants/reset' && req.method === 'POST') {
    grantCounts.requests = {};
    grantCounts.succeeded = {};
    return sendJson(res, 200, grantCounts);
  }
  if (path === '/__admin/settings') {
    if (req.method === 'POST') {
      const patch = JSON.parse((await readBody(req)) || '{}');
      for (const [k, v] of Object.entries(patch)) {
        if (!(k in settings)) return sendJson(res, 400, { error: `unknown setting ${k}` });
        settings[k] = v;
      }
    }
    return sendJson(res, 200, settings);
  }
  const m = path.match(/^\/__admin\/users\/([^/]+)(?:\/(disable|enable|revoke))?$/);
  if (m) {
    const login = decodeURIComponent(m[1]);
    if (!m[2] && req.method === 'PUT') {
      users.set(login, JSON.parse((await readBody(req)) || '{}'));
      return sendJson(res, 200, { login, ...users.get(login) });
    }
    const user = users.get(login);
    if (!user) return sendJson(res, 404, { error: `no user ${login}` });
    if (m[2] === 'revoke' && req.method === 'POST') {
      return sendJson(res, 200, { login, revoked_grants: await revokeAccount(subOf(login, user)) });
    }
    if (m[2] && req.method === 'POST') {
      user.disabled = m[2] === 'disable';
      return sendJson(res, 200, { login, disabled: user.disabled });
    }
    if (!m[2] && req.method === 'GET') return sendJson(res, 200, { login, ...user });
  }
  return sendJson(res, 404, { error: 'not found' });
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, BASE);
    const path = url.pathname;
    if (path.startsWith('/__admin/')) return await admin(req, res, path);
    if (OAUTH_METADATA && path === `/.well-known/oauth-authorization-server${PREFIX}`) {
      req.url = `${PREFIX}/.well-known/openid-configuration${url.search}`;
      url.pathname = `${PREFIX}/.well-known/openid-configuration`;
    }
    if (PREFIX && url.pathname !== PREFIX && !url.pathname.startsWith(`${PREFIX}/`)) {
      return sendJson(res, 404, { error: 'not found' });
    }
    const sub = url.pathname.slice(PREFIX.length) || '/';

    const im = sub.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
    if (im) return await interaction(req, res, im[1], im[2] ?? '');

    const endpoint = endpointOf(sub);
    if (settings.delay_ms > 0 && settings.delay_endpoints.includes(endpoint)) {
      await new Promise((resolve) => { setTimeout(resolve, settings.delay_ms); });
    }
    if (endpoint === 'authorization' && req.method === 'GET') {
      // Entra issues refresh tokens for offline_access without prompt=consent; oidc-provider
      // (OIDC Core 11) drops offline_access unless prompt has consent, so ask for it here.
      const scope = (url.searchParams.get('scope') ?? '').split(' ');
      const prompt = (url.searchParams.get('prompt') ?? '').split(' ').filter(Boolean);
      if (scope.includes('offline_access') && !prompt.includes('consent') && !prompt.includes('none')) {
        url.searchParams.set('prompt', [...prompt, 'consent'].join(' '));
      }
    }
    let grantType;
    let apiGrant; // a refresh asking for an API's scopes (token_exchange / obo): its access token is ours
    if (endpoint === 'token' && req.method === 'POST') {
      // Read the form here (oidc-provider then takes it from req.body) to count and switch on it.
      const form = await readBody(req);
      req.body = form;
      grantType = new URLSearchParams(form).get('grant_type') ?? '';
      grantCounts.requests[grantType] = (grantCounts.requests[grantType] ?? 0) + 1;
      res.on('finish', () => {
        if (res.statusCode === 200) grantCounts.succeeded[grantType] = (grantCounts.succeeded[grantType] ?? 0) + 1;
      });
      if (grantType === 'refresh_token' && settings.refresh_error) return refreshError(res);
      const api = grantType === 'refresh_token' && (EXCHANGE || OBO) ? exchange.apiScopes(form) : undefined;
      if (api) {
        const refreshToken = await provider.RefreshToken.find(new URLSearchParams(form).get('refresh_token') ?? '');
        apiGrant = { ...api, sub: refreshToken?.accountId, clientId: refreshToken?.clientId };
        req.body = api.form;
      }
    }
    if (endpoint === 'token') {
      rewriteJson(res, (answer) => {
        let body = answer;
        if (apiGrant && typeof body.access_token === 'string') body = exchange.apiAnswer(body, apiGrant);
        const keepRefresh = grantType === 'refresh_token' && !settings.refresh_rotation && 'refresh_token' in body;
        if (keepRefresh) {
          // like providers that keep the refresh token: none in the answer
          body = Object.fromEntries(Object.entries(body).filter(([k]) => k !== 'refresh_token'));
        }
        if (body.id_token) return { ...body, id_token: tamperIdToken(body.id_token) };
        // a code or refresh token redeemed with a `resource` (any invalid_target means one was sent)
        if (body.error === 'invalid_target' && settings.reject_resource) {
          return { ...body, error_description: AADSTS9010010 };
        }
        return keepRefresh || apiGrant ? body : undefined;
      });
    }
    if (endpoint === 'discovery' && (!settings.authorization_response_iss || ID_JAG)) {
      rewriteJson(res, (body) => {
        if (!settings.authorization_response_iss) delete body.authorization_response_iss_parameter_supported;
        if (ID_JAG) body.identity_chaining_requested_token_types_supported = [ID_JAG_TYPE];
        return body;
      });
    }
    if (!settings.authorization_response_iss) stripIssFromRedirects(res);

    req.originalUrl = `${url.pathname}${url.search}`; // lets oidc-provider see its mount path
    req.url = `${sub}${url.search}`;
    return providerCallback(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err) });
    else res.destroy();
  }
  return undefined;
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`READY ${ISSUER}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
