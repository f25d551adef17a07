#!/usr/bin/env node
// The official TypeScript SDK client (@modelcontextprotocol/sdk, pinned in ./package.json) as an
// OAuth client of Bastion when users sign in through an enterprise IdP, headless: an
// OAuthClientProvider whose "browser" is plain fetch with a cookie jar per origin. It follows
// Bastion's sign-in choice ("Sign in with <IdP>" link), answers Bastion's consent for the MCP
// client, fills the IdP's sign-in form and accepts its consent, and comes back through Bastion's
// callback to the client's redirect URI. Used by tests/interop/test_federation_clients_typescript.py
// (sits next to node_modules: ESM resolves bare specifiers from the script's folder).
//
// Usage:  node ts_federation_client.mjs <mcp-url> <plan-json>
// Plan:   {"login", "password", "provider": "entra", "redirectUri", "clientName",
//          "clientMetadata": {...extra RFC 7591 members, e.g. "application_type": "native"},
//          "decision": "allow" | "deny", "calls": [{"name", "arguments"}]}
// Output: ONE JSON line on stdout:
//   {"ok", "error"?: {name, message}, "client": <registered client information>,
//    "authorizationUrl", "callback", "iss", "pages": [{url, status, kind, title}],
//    "consentTexts": [visible text of each Bastion consent page],
//    "tokens": {token_type, scope, expires_in, access_token, refresh_token}, "tools": [names],
//    "calls": [{name, result | error}]}
// exit code 0 when ok.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const [url, planArg] = process.argv.slice(2);
const plan = JSON.parse(planArg ?? '{}');
const provider = plan.provider ?? 'entra';
const bastionOrigin = new URL(url).origin;
const out = { ok: false, pages: [], calls: [], consentTexts: [] };

const decode = (s) =>
  s.replace(/&quot;/g, '"').replace(/&#x27;|&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
const attr = (tag, name) => {
  const m = tag.match(new RegExp(`\\b${name}="([^"]*)"`, 'i'));
  return m ? decode(m[1]) : undefined;
};
const visibleText = (html) =>
  decode(html.replace(/<script[\s\S]*?<\/script>|<style[\s\S]*?<\/style>/gi, ' ').replace(/<[^>]+>/g, ' '))
    .replace(/\s+/g, ' ')
    .trim();

// Cookies per origin (Bastion and the IdP both live on 127.0.0.1, on different ports).
const jars = new Map();
function jarOf(u) {
  if (!jars.has(u.origin)) jars.set(u.origin, new Map());
  return jars.get(u.origin);
}
function keepCookies(u, res) {
  const jar = jarOf(u);
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const value = pair.slice(i + 1).trim();
    const expired = attrs.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a) || /^\s*expires\s*=.*1970/i.test(a));
    if (expired || value === '') jar.delete(name);
    else jar.set(name, value);
  }
}

// The user in a browser: follow redirects by hand, follow Bastion's "Sign in with <IdP>" link,
// answer Bastion's consent form (plan.decision), fill the IdP's sign-in form (login + password)
// and submit its consent form with its first button; stop at the first redirect to the client's
// redirect URI (returned, not fetched).
async function browse(startUrl) {
  let next = { url: new URL(startUrl), method: 'GET' };
  for (let hop = 0; hop < 30; hop++) {
    const cookie = [...jarOf(next.url)].map(([k, v]) => `${k}=${v}`).join('; ');
    const headers = cookie ? { cookie } : {};
    if (next.body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(next.url, { method: next.method, body: next.body, headers, redirect: 'manual' });
    keepCookies(next.url, res);
    const location = res.headers.get('location');
    if (location && res.status >= 300 && res.status < 400) {
      const target = new URL(location, next.url);
      out.pages.push({ url: next.url.href, status: res.status, kind: 'redirect' });
      if (target.href.startsWith(plan.redirectUri)) return target;
      next = { url: target, method: 'GET' };
      continue;
    }
    const html = await res.text();
    const title = html.match(/<title>([^<]*)<\/title>/i)?.[1];
    const atBastion = next.url.origin === bastionOrigin;
    const link = html.match(new RegExp(`href="(/login/idp/${provider}\\?[^"]*)"`));
    const form = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/i);
    if (atBastion && link && !/name="decision"/.test(html)) {
      out.pages.push({ url: next.url.href, status: res.status, kind: 'choice', title });
      next = { url: new URL(decode(link[1]), next.url), method: 'GET' };
      continue;
    }
    if (res.status !== 200 || !form) {
      throw new Error(`stuck at ${next.url}: HTTP ${res.status} "${title}": ${visibleText(html).slice(0, 300)}`);
    }
    const fields = new URLSearchParams();
    for (const [tag] of form[2].matchAll(/<input\b[^>]*>/gi)) {
      const name = attr(tag, 'name');
      if (name) fields.set(name, attr(tag, 'value') ?? '');
    }
    const button = form[2].match(/<button\b[^>]*>/i)?.[0];
    let kind;
    if (atBastion && /name="decision"/.test(form[2])) {
      kind = 'consent';
      out.consentTexts.push(visibleText(html));
      fields.set('decision', plan.decision ?? 'allow');
    } else if (atBastion) {
      throw new Error(`unexpected Bastion page at ${next.url}: "${title}"`);
    } else if (fields.has('password')) {
      kind = 'idp-login';
      fields.set('login', plan.login);
      fields.set('password', plan.password ?? '');
    } else {
      kind = 'idp-consent';
      if (button && attr(button, 'name')) fields.set(attr(button, 'name'), attr(button, 'value') ?? '');
    }
    out.pages.push({ url: next.url.href, status: res.status, kind, title });
    next = { url: new URL(attr(form[1], 'action') ?? next.url.href, next.url), method: 'POST', body: fields.toString() };
  }
  throw new Error('the sign-in flow did not end');
}

class HeadlessFederatedProvider {
  constructor() {
    this.code = undefined;
  }
  get redirectUrl() {
    return plan.redirectUri;
  }
  get clientMetadata() {
    return {
      client_name: plan.clientName ?? 'TypeScript SDK test client',
      redirect_uris: [plan.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      ...(plan.clientMetadata ?? {}),
    };
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
    out.client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this._verifier = verifier;
  }
  codeVerifier() {
    return this._verifier;
  }
  async redirectToAuthorization(authorizationUrl) {
    out.authorizationUrl = authorizationUrl.href;
    const callback = await browse(authorizationUrl);
    out.callback = callback.href;
    out.iss = callback.searchParams.get('iss');
    const error = callback.searchParams.get('error');
    if (error) throw new Error(`authorization refused: ${error} ${callback.searchParams.get('error_description') ?? ''}`);
    this.code = callback.searchParams.get('code');
  }
}

async function main() {
  const authProvider = new HeadlessFederatedProvider();
  const open = () => ({
    client: new Client({ name: 'bastion-ts-federation-client', version: '1.0.0' }, { capabilities: {} }),
    transport: new StreamableHTTPClientTransport(new URL(url), { authProvider }),
  });
  let session = open();
  try {
    await session.client.connect(session.transport);
  } catch (err) {
    if (!(err instanceof UnauthorizedError) || !authProvider.code) throw err;
    // redirectToAuthorization() ran: redeem the code (with the PKCE verifier the provider kept),
    // then connect again with a new client + transport (a transport cannot be started twice).
    await session.transport.finishAuth(authProvider.code);
    session = open();
    await session.client.connect(session.transport);
  }
  const { client, transport } = session;
  const tokens = authProvider.tokens();
  out.tokens = {
    token_type: tokens?.token_type,
    scope: tokens?.scope,
    expires_in: tokens?.expires_in,
    access_token: tokens?.access_token,
    refresh_token: tokens?.refresh_token,
  };
  out.tools = (await client.listTools()).tools.map((t) => t.name);
  for (const call of plan.calls ?? []) {
    const entry = { name: call.name };
    try {
      entry.result = await client.callTool({ name: call.name, arguments: call.arguments ?? {} });
    } catch (err) {
      entry.error = { message: String(err?.message ?? err) };
    }
    out.calls.push(entry);
  }
  if (transport.sessionId) await transport.terminateSession().catch(() => {});
  await client.close();
  out.ok = true;
}

main()
  .catch((err) => {
    out.error = { name: err?.constructor?.name ?? 'Error', message: String(err?.message ?? err) };
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(out.ok ? 0 : 1);
  });
