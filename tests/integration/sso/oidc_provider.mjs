// A real OpenID provider for the single sign-on tests: the certified `oidc-provider`
// package on loopback, with a one-field login page standing in for the provider's
// own (the account is named by its id; consent is granted with the login).
//
// Usage: node oidc_provider.mjs CONFIG.json, where the config holds issuer, port,
// jwks (the provider's signing keys), conformIdTokenClaims, and the path of an
// accounts file ({id: claims}, read at each login so a test can change a user's
// claims). Clients register themselves (dynamic registration). The package is
// loaded from OIDC_PROVIDER_DIR/node_modules. Prints "ready" when serving.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const entry = path.join(process.env.OIDC_PROVIDER_DIR, 'node_modules/oidc-provider/lib/index.js');
const { default: Provider } = await import(pathToFileURL(entry).href);

const accounts = () => JSON.parse(fs.readFileSync(config.accounts, 'utf8'));

const provider = new Provider(config.issuer, {
  jwks: config.jwks,
  conformIdTokenClaims: config.conformIdTokenClaims,
  cookies: { keys: ['homeserver-tests-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // The homeserver under test is on loopback, which the provider's protection
  // against server-side request forgery would refuse for back-channel logout.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  async findAccount(ctx, id) {
    const claims = accounts()[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.error', (ctx, err) => console.error('backchannel.error', err.message));

function page(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><html><body>${body}</body></html>`);
}

async function readForm(req) {
  let data = '';
  for await (const chunk of req) data += chunk;
  return new URLSearchParams(data);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'wrong interaction');
  if (req.method === 'GET') {
    return page(res, 200, `<form method="post" action="/interaction/${uid}/login">`
      + '<input name="login"><button type="submit">Sign in</button></form>');
  }
  if (action !== 'login') return page(res, 404, 'unknown action');
  const accountId = (await readForm(req)).get('login');
  if (!accounts()[accountId]) return page(res, 403, 'unknown account');
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  return provider.interactionFinished(
    req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false },
  );
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/([a-z]+))?/.exec(req.url);
  if (!match) return callback(req, res);
  return interaction(req, res, match[1], match[2]).catch((err) => {
    console.error(err);
    page(res, 500, String(err));
  });
});
server.listen(config.port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
