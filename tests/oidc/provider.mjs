// A real OpenID provider (node-oidc-provider, certified) for Portcullis's end-to-end tests.
// TEST TOOL, LOOPBACK ONLY: it logs users in by name without a password, and it exposes
// unauthenticated control endpoints under /_test/ that rotate and misuse its signing keys.
//
//   node provider.mjs CERT.pem KEY.pem CONFIG.json
//
// CONFIG.json (every field optional except port):
//   {
//     "port": 8443, "host": "127.0.0.1", "issuer": "https://localhost:8443",
//     "resource": "https://api.portcullis.test",      // the audience of every access token
//     "resource_scope": "openid profile email groups api:read api:write",
//     "access_token_ttl": 300,                         // seconds
//     "id_token_ttl": 3600,                            // seconds
//     "alg": "RS256",                                  // RS256, PS256, ES256 or EdDSA
//     "code_client": { "client_id": "...", "client_secret": "...", "redirect_uris": ["..."] },
//     "service_client": { "client_id": "...", "client_secret": "..." },
//     "users": { "name": { "email": "...", "groups": [], "amr": [], "acr": "..." } }
//   }
//
// Interactions: GET /interaction/:uid shows a login form (username only); POST
// /interaction/:uid/login logs that user in with the user table's amr and acr; consent is
// granted automatically for what was asked.
//
// Control endpoints (test only):
//   POST /_test/rotate[?drop_old=1]  new signing key (new kid) used from now on; the previous
//                                    keys stay published unless drop_old=1
//   POST /_test/sign                 body {"header": {...}?, "claims": {...}}: a compact JWS of
//                                    exactly these claims, signed with the current key
//   GET  /_test/keys                 the public JWKS (what jwks_uri serves)
//
// Logs go to stderr; SIGTERM (or SIGINT) closes the server and exits 0.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

import * as jose from 'jose';
import Provider from 'oidc-provider';

function log(...args) {
  process.stderr.write(`[oidc-provider ${new Date().toISOString()}] ${args.join(' ')}\n`);
}

const [certPath, keyPath, configPath] = process.argv.slice(2);
if (!configPath) {
  log('usage: node provider.mjs CERT.pem KEY.pem CONFIG.json');
  process.exit(2);
}

const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const host = config.host ?? '127.0.0.1';
const port = Number(config.port);
const issuer = config.issuer ?? `https://localhost:${port}`;
const resource = config.resource ?? 'https://api.portcullis.test';
const resourceScope = config.resource_scope ?? 'openid profile email groups api:read api:write';
const accessTokenTtl = Number(config.access_token_ttl ?? 300);
const idTokenTtl = Number(config.id_token_ttl ?? 3600);
const alg = config.alg ?? 'RS256';
const codeClient = {
  client_id: 'portcullis',
  client_secret: 'portcullis-test-secret',
  redirect_uris: ['https://localhost/oauth2/callback'],
  ...config.code_client,
};
const serviceClient = {
  client_id: 'portcullis-service',
  client_secret: 'portcullis-service-secret',
  ...config.service_client,
};

const users = {
  alice: {
    email: 'alice@example.com', name: 'Alice', groups: ['eng'], amr: ['pwd'], acr: 'urn:portcullis:pwd',
  },
  bob: {
    email: 'bob@example.com', name: 'Bob', groups: ['eng', 'admins'], amr: ['pwd', 'mfa'], acr: 'urn:portcullis:mfa',
  },
  carol: {
    email: 'carol@other.example', name: 'Carol', groups: ['partners'], amr: ['pwd'], acr: 'urn:portcullis:pwd',
  },
  ...config.users,
};

// Signing keys, newest first: oidc-provider signs with the first key that fits the algorithm.
const keys = [];

async function newKey() {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  jwk.kid = crypto.randomBytes(9).toString('base64url');
  jwk.alg = alg;
  jwk.use = 'sig';
  return { jwk, privateKey };
}

function publicJwks() {
  return {
    keys: keys.map(({ jwk }) => {
      const {
        d, p, q, dp, dq, qi, ...pub
      } = jwk;
      return pub;
    }),
  };
}

function userClaims(sub) {
  const user = users[sub];
  return {
    sub,
    email: user.email,
    email_verified: true,
    name: user.name ?? sub,
    preferred_username: sub,
    groups: user.groups ?? [],
  };
}

// What was recorded at login (acr, amr, auth_time) for the token being minted.
async function authenticationOf(ctx, token) {
  const source = ctx?.oidc?.entities?.AuthorizationCode ?? ctx?.oidc?.entities?.RefreshToken;
  if (source?.accountId === token.accountId) {
    return { acr: source.acr, amr: source.amr, auth_time: source.authTime };
  }
  if (token.sessionUid) {
    const session = await ctx.oidc.provider.Session.findByUid(token.sessionUid);
    if (session) {
      return { acr: session.acr, amr: session.amr, auth_time: session.loginTs };
    }
  }
  return {};
}

// oidc-provider's own in-memory adapter keeps one store per Provider instance, and the
// instance is rebuilt on every key rotation (a keystore cannot change in place): this one store
// outlives them, so sessions, grants, codes and tokens survive a rotation.
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const grantMembers = new Map(); // grantId -> Set of keys
const uidIndex = new Map(); // uid -> key
const userCodeIndex = new Map(); // userCode -> key
// What revoking a grant removes (an Interaction or a Session also names a grantId, and stays).
const grantable = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  static get(key) {
    const entry = key && store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return structuredClone(entry.payload);
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload: structuredClone(payload), expiresAt });
    if (grantable.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (payload.uid) uidIndex.set(payload.uid, key);
    if (payload.userCode) userCodeIndex.set(payload.userCode, key);
  }

  async find(id) {
    return SharedMemoryAdapter.get(this.key(id));
  }

  async findByUid(uid) {
    return SharedMemoryAdapter.get(uidIndex.get(uid));
  }

  async findByUserCode(userCode) {
    return SharedMemoryAdapter.get(userCodeIndex.get(userCode));
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function configuration() {
  return {
    adapter: SharedMemoryAdapter,
    clients: [
      {
        client_id: codeClient.client_id,
        client_secret: codeClient.client_secret,
        redirect_uris: codeClient.redirect_uris,
        response_types: ['code'],
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: alg,
      },
      {
        client_id: serviceClient.client_id,
        client_secret: serviceClient.client_secret,
        redirect_uris: [],
        response_types: [],
        grant_types: ['client_credentials'],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: alg,
      },
    ],
    clientDefaults: { id_token_signed_response_alg: alg },
    enabledJWA: { idTokenSigningAlgValues: [alg] },
    jwks: { keys: keys.map(({ jwk }) => jwk) },
    cookies: { keys: cookieKeys },
    acrValues: [...new Set(Object.values(users).map((u) => u.acr).filter(Boolean))],
    claims: {
      // acr, amr and auth_time go into every ID token, not only when asked for.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // The scope's claims go into the ID token too (not only to userinfo).
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      if (!users[sub]) return undefined;
      return { accountId: sub, claims: async () => userClaims(sub) };
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: resourceScope,
          audience: resource,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        }),
      },
    },
    async extraTokenClaims(ctx, token) {
      if (!token.accountId || !users[token.accountId]) return undefined;
      const { email, groups } = userClaims(token.accountId);
      return { email, groups, ...(await authenticationOf(ctx, token)) };
    },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: idTokenTtl,
      RefreshToken: 86400,
      Interaction: 600,
      Session: 86400,
      Grant: 86400,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

// The provider (and its keystore) is rebuilt on every rotation; sessions, grants and tokens
// live in SharedMemoryAdapter's store, which every instance shares.
let provider;
let handler;

function buildProvider() {
  provider = new Provider(issuer, configuration());
  provider.proxy = false;
  provider.on('server_error', (ctx, err) => log('server_error', err.stack ?? err));
  provider.on('grant.error', (ctx, err) => log('grant.error', err.name, err.message, err.error_description ?? ''));
  provider.on('authorization.error', (ctx, err) => log('authorization.error', err.name, err.error_description ?? err.message));
  provider.on('grant.success', (ctx) => log('grant.success', ctx.oidc.params.grant_type, ctx.oidc.client?.clientId ?? ''));
  handler = provider.callback();
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, 'application/json', JSON.stringify(value));
}

async function interaction(req, res, url) {
  const [, , uid, action] = url.pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    sendJson(res, 400, { error: 'interaction uid mismatch' });
    return;
  }
  const { prompt, params } = details;
  log('interaction', req.method, action ?? '', `prompt=${prompt.name}`, `reasons=${prompt.reasons.join(',')}`);

  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const user = users[username];
    if (!user) {
      log('login refused for unknown user', JSON.stringify(username));
      send(res, 401, 'text/html; charset=utf-8', `<!doctype html><p>unknown user ${escapeHtml(username)}</p>`);
      return;
    }
    log('login', username, `amr=${(user.amr ?? []).join(',')}`, `acr=${user.acr ?? ''}`);
    await provider.interactionFinished(req, res, {
      login: { accountId: username, amr: user.amr, acr: user.acr },
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (req.method === 'GET' && !action && prompt.name === 'login') {
    send(res, 200, 'text/html; charset=utf-8', `<!doctype html>
<html><head><title>Sign in (test provider)</title></head><body>
<h1>Sign in to ${escapeHtml(params.client_id)}</h1>
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<input type="text" name="username" autofocus>
<button type="submit">Sign in</button>
</form></body></html>
`);
    return;
  }

  if (req.method === 'GET' && !action && prompt.name === 'consent') {
    // Consent is granted for whatever is missing.
    const { details: missing } = prompt;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    return;
  }

  sendJson(res, 400, { error: `unexpected interaction ${req.method} ${url.pathname} (prompt ${prompt.name})` });
}

async function control(req, res, url) {
  if (req.method === 'POST' && url.pathname === '/_test/rotate') {
    const dropOld = ['1', 'true'].includes(url.searchParams.get('drop_old'));
    const key = await newKey();
    if (dropOld) keys.length = 0;
    keys.unshift(key);
    buildProvider();
    log('rotated: signing with kid', key.jwk.kid, dropOld ? '(old keys dropped)' : `(${keys.length - 1} old kept)`);
    sendJson(res, 200, { kid: key.jwk.kid, jwks: publicJwks() });
    return;
  }
  if (req.method === 'POST' && url.pathname === '/_test/sign') {
    let body;
    try {
      body = JSON.parse(await readBody(req));
    } catch (e) {
      sendJson(res, 400, { error: `body is not JSON: ${e.message}` });
      return;
    }
    const [{ jwk, privateKey }] = keys;
    const header = { alg, kid: jwk.kid, typ: 'JWT', ...body.header };
    try {
      const token = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(body.claims ?? {})))
        .setProtectedHeader(header)
        .sign(privateKey);
      sendJson(res, 200, { token, kid: jwk.kid });
    } catch (e) {
      sendJson(res, 400, { error: e.message });
    }
    return;
  }
  if (req.method === 'GET' && url.pathname === '/_test/keys') {
    sendJson(res, 200, publicJwks());
    return;
  }
  sendJson(res, 404, { error: 'no such test endpoint' });
}

keys.push(await newKey());
buildProvider();

const server = https.createServer({
  cert: fs.readFileSync(certPath),
  key: fs.readFileSync(keyPath),
}, (req, res) => {
  const url = new URL(req.url, issuer);
  let work;
  if (url.pathname.startsWith('/_test/')) {
    work = control(req, res, url);
  } else if (url.pathname.startsWith('/interaction/')) {
    work = interaction(req, res, url);
  } else {
    handler(req, res);
    return;
  }
  work.catch((e) => {
    log('error', req.method, url.pathname, e.stack ?? e);
    if (!res.headersSent) sendJson(res, 500, { error: e.message });
  });
});

server.listen(port, host, () => {
  log(`listening on https://${host}:${port}, issuer ${issuer}, resource ${resource}, kid ${keys[0].jwk.kid}`);
});

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
