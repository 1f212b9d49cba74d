import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import { createApp } from '../../src/app.js';
import { ADMIN, call, startTestPortal, type TestPortal } from '../support/harness.js';
import { Browser } from '../support/browser-client.js';

type Cred = 'none' | 'wrong' | 'other' | 'revoked' | 'own' | 'admin';
const CREDS: Cred[] = ['none', 'wrong', 'other', 'revoked', 'own', 'admin'];

interface Ctx {
  t: TestPortal;
  ownEmail: string;
  ownKeyId: string;
  /** A fresh key of the own user (for calls that revoke one). */
  freshOwnKeyId(): Promise<string>;
}

interface Row {
  /** 'api': credentials as Authorization: Bearer; 'page': as the browser session that credential gives. */
  via: 'api' | 'page';
  request: (ctx: Ctx) => Promise<{ path: string; body?: Record<string, unknown> }>;
  expect: Record<Cred, number> | number;
}

const all = (n: number) => n;
const OWN_EMAIL = 'owner@matrix.example';

/** Every route of the app, with the status each kind of caller gets. */
const MATRIX: Record<string, Row | Row[]> = {
  'GET /healthz': { via: 'api', request: async () => ({ path: '/healthz' }), expect: all(200) },
  'POST /admin/backup': {
    via: 'api', request: async () => ({ path: '/admin/backup', body: {} }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 },
  },
  'GET /metrics': { via: 'api', request: async () => ({ path: '/metrics' }), expect: { none: 401, wrong: 401, other: 401, revoked: 401, own: 401, admin: 200 } },
  'GET /api/key-pool-status': { via: 'api', request: async () => ({ path: '/api/key-pool-status' }), expect: all(200) },
  'POST /api/register-key': {
    via: 'api', request: async (c) => ({ path: '/api/register-key', body: { email: c.ownEmail } }),
    expect: { none: 409, wrong: 401, other: 409, revoked: 401, own: 201, admin: 201 },
  },
  'POST /api/revoke-key': {
    via: 'api', request: async (c) => ({ path: '/api/revoke-key', body: { key_id: await c.freshOwnKeyId() } }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 200, admin: 200 },
  },
  'POST /api/my-keys': {
    via: 'api', request: async (c) => ({ path: '/api/my-keys', body: { email: c.ownEmail } }),
    expect: { none: 401, wrong: 401, other: 200, revoked: 401, own: 200, admin: 200 },
  },
  'GET /api/user-stats/:email': {
    via: 'api', request: async (c) => ({ path: `/api/user-stats/${encodeURIComponent(c.ownEmail)}` }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 200, admin: 200 },
  },
  'GET /api/key-stats/:id': {
    via: 'api', request: async (c) => ({ path: `/api/key-stats/${c.ownKeyId}` }),
    expect: { none: 401, wrong: 401, other: 404, revoked: 401, own: 200, admin: 200 },
  },
  'GET /api/requests': [
    { via: 'api', request: async () => ({ path: '/api/requests' }), expect: { none: 401, wrong: 401, other: 200, revoked: 401, own: 200, admin: 200 } },
    { via: 'api', request: async (c) => ({ path: `/api/requests?email=${encodeURIComponent(c.ownEmail)}` }),
      expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 200, admin: 200 } },
    { via: 'api', request: async (c) => ({ path: `/api/requests?key_id=${c.ownKeyId}` }),
      expect: { none: 401, wrong: 401, other: 404, revoked: 401, own: 200, admin: 200 } },
  ],
  'GET /api/all-users-stats': {
    via: 'api', request: async () => ({ path: '/api/all-users-stats' }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 },
  },
  'POST /api/sync-usage': {
    via: 'api', request: async () => ({ path: '/api/sync-usage', body: {} }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 },
  },
  'GET /api/usage.csv': {
    via: 'api', request: async () => ({ path: '/api/usage.csv' }),
    expect: { none: 401, wrong: 401, other: 200, revoked: 401, own: 200, admin: 200 },
  },
  'GET /usage': {
    via: 'api', request: async () => ({ path: '/usage' }),
    expect: { none: 401, wrong: 401, other: 200, revoked: 401, own: 200, admin: 401 },
  },
  'POST /admin/pool': {
    via: 'api', request: async () => ({ path: '/admin/pool', body: { count: 1 } }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 201 },
  },
  'POST /admin/keys': [
    { via: 'api', request: async () => ({ path: '/admin/keys', body: { label: 'matrix', daily_limit: 5 } }),
      expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 201 } },
    { via: 'page', request: async () => ({ path: '/admin/keys', body: { label: 'matrix', daily_limit: '5' } }),
      expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'POST /admin/keys/revoke': [
    { via: 'api', request: async () => ({ path: '/admin/keys/revoke', body: { key_ids: ['9998'] } }),
      expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 404 } },
    { via: 'page', request: async () => ({ path: '/admin/keys/revoke', body: { key_id: '9998' } }),
      expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 404 } },
  ],
  'POST /admin/keys/bulk': [
    { via: 'api', request: async () => ({ path: '/admin/keys/bulk', body: { count: 1, label: 'matrix' } }),
      expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 201 } },
    { via: 'page', request: async () => ({ path: '/admin/keys/bulk', body: { count: '1', label: 'matrix' } }),
      expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 201 } },
  ],
  'GET /admin/keys': [
    { via: 'api', request: async () => ({ path: '/admin/keys' }), expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async () => ({ path: '/admin/keys' }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'GET /admin/keys/:id': [
    { via: 'api', request: async (c) => ({ path: `/admin/keys/${c.ownKeyId}` }), expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async (c) => ({ path: `/admin/keys/${c.ownKeyId}` }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'PATCH /admin/keys/:id': {
    via: 'api', request: async (c) => ({ path: `/admin/keys/${c.ownKeyId}`, body: { label: 'patched' } }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 },
  },
  'DELETE /admin/keys/:id': {
    via: 'api', request: async (c) => ({ path: `/admin/keys/${await c.freshOwnKeyId()}` }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 },
  },
  'POST /admin/keys/:id': {
    via: 'page', request: async (c) => ({ path: `/admin/keys/${c.ownKeyId}`, body: { action: 'update', label: 'form' } }),
    expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 303 },
  },
  'GET /admin/usage': [
    { via: 'api', request: async () => ({ path: '/admin/usage' }), expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async () => ({ path: '/admin/usage' }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'POST /admin/reset-usage': [
    { via: 'api', request: async (c) => ({ path: '/admin/reset-usage', body: { key_id: c.ownKeyId } }),
      expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async (c) => ({ path: '/admin/reset-usage', body: { key_id: c.ownKeyId } }),
      expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 303 } },
  ],
  'GET /admin/audit': [
    { via: 'api', request: async () => ({ path: '/admin/audit' }), expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async () => ({ path: '/admin/audit' }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'GET /': { via: 'page', request: async () => ({ path: '/' }), expect: all(200) },
  'GET /lang/:code': { via: 'page', request: async () => ({ path: '/lang/zh-CN?back=/' }), expect: all(303) },
  'GET /register': { via: 'page', request: async () => ({ path: '/register' }), expect: all(200) },
  'POST /register': {
    via: 'page', request: async (c) => ({ path: '/register', body: { email: c.ownEmail } }),
    expect: { none: 409, wrong: 409, other: 409, revoked: 409, own: 200, admin: 200 },
  },
  'GET /my-keys': { via: 'page', request: async () => ({ path: '/my-keys' }), expect: all(200) },
  'GET /my-keys/requests': [
    { via: 'page', request: async () => ({ path: '/my-keys/requests' }), expect: { none: 303, wrong: 303, other: 200, revoked: 303, own: 200, admin: 303 } },
    { via: 'page', request: async (c) => ({ path: `/my-keys/requests?key_id=${c.ownKeyId}` }),
      expect: { none: 303, wrong: 303, other: 404, revoked: 303, own: 200, admin: 303 } },
  ],
  'GET /admin/log': { via: 'page', request: async () => ({ path: '/admin/log' }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  'POST /my-keys/sign-in': { via: 'page', request: async () => ({ path: '/my-keys/sign-in', body: { key: 'usr_pool_0001_00' } }), expect: all(401) },
  'POST /my-keys/sign-out': { via: 'page', request: async () => ({ path: '/my-keys/sign-out', body: {} }), expect: all(303) },
  'POST /my-keys/add': {
    via: 'page', request: async () => ({ path: '/my-keys/add', body: { label: 'matrix' } }),
    expect: { none: 303, wrong: 303, other: 200, revoked: 303, own: 200, admin: 303 },
  },
  'GET /my-keys/revoke/:id': {
    via: 'page', request: async (c) => ({ path: `/my-keys/revoke/${c.ownKeyId}` }),
    expect: { none: 303, wrong: 303, other: 404, revoked: 303, own: 200, admin: 303 },
  },
  'POST /my-keys/revoke/:id': {
    via: 'page', request: async (c) => ({ path: `/my-keys/revoke/${await c.freshOwnKeyId()}`, body: {} }),
    expect: { none: 303, wrong: 303, other: 404, revoked: 303, own: 303, admin: 303 },
  },
  'GET /admin': { via: 'page', request: async () => ({ path: '/admin' }), expect: { none: 200, wrong: 200, other: 200, revoked: 200, own: 200, admin: 303 } },
  'POST /admin/sign-in': { via: 'page', request: async () => ({ path: '/admin/sign-in', body: { token: 'wrong-admin-token-000' } }), expect: all(401) },
  'POST /admin/sign-out': { via: 'page', request: async () => ({ path: '/admin/sign-out', body: {} }), expect: all(303) },
  'GET /admin/users': {
    via: 'page', request: async () => ({ path: '/admin/users' }),
    expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 },
  },
  'GET /admin/users/:email': {
    via: 'page', request: async (c) => ({ path: `/admin/users/${encodeURIComponent(c.ownEmail)}` }),
    expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 },
  },
  'GET /admin/requests': [
    { via: 'api', request: async () => ({ path: '/admin/requests' }), expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async () => ({ path: '/admin/requests' }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'POST /admin/requests/:id/:decision': [
    { via: 'api', request: async () => ({ path: '/admin/requests/0123456789ab/approve', body: {} }),
      expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 404 } },
    { via: 'page', request: async () => ({ path: '/admin/requests/0123456789ab/deny', body: {} }),
      expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 404 } },
  ],
  'POST /api/claim-key': {
    via: 'api', request: async () => ({ path: '/api/claim-key', body: { claim: 'not-a-claim-code' } }),
    expect: { none: 404, wrong: 401, other: 404, revoked: 401, own: 404, admin: 404 },
  },
  'GET /register/claim': { via: 'page', request: async () => ({ path: '/register/claim' }), expect: all(200) },
  'POST /register/claim': { via: 'page', request: async () => ({ path: '/register/claim', body: { claim: 'not-a-claim-code' } }), expect: all(404) },
  'GET /admin/prices': [
    { via: 'api', request: async () => ({ path: '/admin/prices' }), expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 } },
    { via: 'page', request: async () => ({ path: '/admin/prices' }), expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 } },
  ],
  'PUT /admin/prices': {
    via: 'api', request: async () => ({ path: '/admin/prices', body: { reset: true } }),
    expect: { none: 401, wrong: 401, other: 403, revoked: 401, own: 403, admin: 200 },
  },
  'POST /admin/prices': {
    via: 'page', request: async () => ({ path: '/admin/prices', body: { action: 'set', pattern: 'matrix-model', input: '1', output: '2' } }),
    expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 303 },
  },
  'GET /admin/pool': {
    via: 'page', request: async () => ({ path: '/admin/pool' }),
    expect: { none: 303, wrong: 303, other: 403, revoked: 303, own: 403, admin: 200 },
  },
};

/** "METHOD /path" of every route the app registers. */
function routesOf(app: Express): string[] {
  const out: string[] = [];
  const walk = (stack: any[]) => {
    for (const layer of stack) {
      if (layer.route) {
        for (const m of Object.keys(layer.route.methods)) if (m !== '_all') out.push(`${m.toUpperCase()} ${layer.route.path}`);
      } else if (layer.handle?.stack) {
        walk(layer.handle.stack);
      }
    }
  };
  walk((app as any).router.stack);
  return [...new Set(out)]; // a path served as JSON and as a page is one route, in two routers
}

describe('the auth matrix', () => {
  let t: TestPortal;
  const keys: Record<string, string> = {};
  before(async () => {
    t = await startTestPortal({ env: { POOL_SIZE: '200', AUTH_FAILURE_LIMIT: '0' } });
    const reg = async (email: string) => (await call(t.url, 'POST', '/api/register-key', { body: { email }, token: ADMIN })).body.key as string;
    keys.own = await reg(OWN_EMAIL);
    keys.other = await reg('other@matrix.example');
    keys.revoked = await reg('gone@matrix.example');
  });
  after(async () => { await t.stop(); });

  it('lists every route the app has', () => {
    const app = createApp(t.portal);
    assert.deepEqual(routesOf(app).sort(), Object.keys(MATRIX).sort(), 'a route without a row in MATRIX (or a row without a route)');
  });

  it('gives each kind of caller the expected status on every route', async () => {
    const ctx: Ctx = {
      t, ownEmail: OWN_EMAIL, ownKeyId: keys.own!.slice(9, 13),
      freshOwnKeyId: async () => (await call(t.url, 'POST', '/api/register-key', { body: { email: OWN_EMAIL }, token: ADMIN })).body.key_id,
    };
    // Sessions for the page rows: a browser signed in with each credential (the revoked key's before
    // it is revoked). Signing out ends a session for good, so after a sign-out row the browser signs in again.
    const signIn = async (cred: Cred): Promise<Browser> => {
      const b = new Browser(t.url);
      await b.get('/register');
      if (cred === 'wrong') b.cookies.kp_session = 'eyJraW5kIjoiYWRtaW4ifQ.forged';
      if (cred === 'other' || cred === 'own' || cred === 'revoked') {
        assert.equal((await b.post('/my-keys/sign-in', { key: keys[cred]! })).status, 303);
      }
      if (cred === 'admin') assert.equal((await b.post('/admin/sign-in', { token: ADMIN })).status, 303);
      await b.get('/register'); // a page with a form, as a browser loads after the redirect: it carries the new session's CSRF token
      b.remember();
      return b;
    };
    const browsers = {} as Record<Cred, Browser>;
    for (const cred of CREDS) browsers[cred] = await signIn(cred);
    await call(t.url, 'POST', '/api/revoke-key', { body: { key: keys.revoked } });
    const bearer: Record<Cred, string | undefined> = {
      none: undefined, wrong: 'usr_pool_9999_0123456789abcdef', other: keys.other, revoked: keys.revoked, own: keys.own, admin: ADMIN,
    };

    const failures: string[] = [];
    for (const [route, rows] of Object.entries(MATRIX)) {
      const method = route.split(' ')[0]!;
      for (const row of [rows].flat()) for (const cred of CREDS) {
        const want = typeof row.expect === 'number' ? row.expect : row.expect[cred];
        const { path, body } = await row.request(ctx);
        let got: number;
        if (row.via === 'api') {
          got = (await call(t.url, method, path, { body, token: bearer[cred] })).status;
        } else {
          const b = browsers[cred];
          got = (method === 'GET' ? await b.get(path) : await b.post(path, body ?? {})).status;
          if (route.endsWith('sign-out') || route === 'POST /admin/sign-in') {
            if (cred === 'revoked') await b.restore(); else browsers[cred] = await signIn(cred);
          }
        }
        if (got !== want) failures.push(`${route} (${row.via}) as ${cred}: ${got}, expected ${want}`);
      }
    }
    assert.deepEqual(failures, []);
  });
});
