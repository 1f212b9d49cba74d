import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { ADMIN, call, chat, startTestPortal } from '../support/harness.js';

const METRICS_TOKEN = 'metrics-token-0123456789';

describe('GET /metrics', () => {
  it('serves the Prometheus text format to the admin or METRICS_TOKEN: keys, pool, usage, CLIProxyAPI, reconciler, HTTP, gateway', async () => {
    const t = await startTestPortal({ env: { METRICS_TOKEN, GATEWAY_PORT: '0', POOL_SIZE: '20' } });
    try {
      const reg = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'm@x.cn' } })).body as { key: string };
      await call(t.url, 'POST', '/api/register-key', { body: { email: 'bad' } });
      assert.equal(await chat(t.fake, reg.key), 200);
      await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN, body: {} });
      const gw = `http://127.0.0.1:${t.portal.gatewayPort}`;
      assert.equal((await fetch(`${gw}/v1/models`, { headers: { Authorization: `Bearer ${reg.key}` } })).status, 200);
      assert.equal((await fetch(`${gw}/v1/models`, { headers: { Authorization: 'Bearer nope' } })).status, 401);

      assert.equal((await call(t.url, 'GET', '/metrics')).status, 401);
      assert.equal((await call(t.url, 'GET', '/metrics', { token: reg.key })).status, 401, 'a key holder does not read them');
      const res = await fetch(`${t.url}/metrics`, { headers: { Authorization: `Bearer ${METRICS_TOKEN}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
      // (The parser folds a histogram's labelled series together: their counts are read from the _count lines.)
      const count = (name: string, labels: string) => Number(new RegExp(`^${name}_count\\{${labels.replace(/[{}]/g, '')}\\} (\\S+)$`, 'm').exec(text)?.[1]);
      const value = (name: string, labels: Record<string, string> = {}) => {
        const f = families.get(name);
        assert.ok(f, `${name} is exported`);
        const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
        assert.ok(m, `${name} ${JSON.stringify(labels)}`);
        return Number(m.value ?? m.count);
      };
      assert.equal(value('kp_keys', { state: 'active' }), 1);
      assert.equal(value('kp_pool_keys', { state: 'unused' }), 19);
      assert.equal(value('kp_usage_records_ingested_total'), 1);
      assert.ok(value('kp_usage_last_record_age_seconds') >= 0);
      assert.equal(value('kp_cliproxy_up', { check: 'reachable' }), 1);
      assert.equal(value('kp_cliproxy_up', { check: 'authenticated' }), 1);
      assert.ok(value('kp_reconciler_writes_total', { action: 'add' }) >= 2, 'the sentinel and the key');
      assert.equal(count('kp_http_request_duration_seconds', 'method="POST",route="/api/register-key",status="201"'), 1);
      assert.equal(count('kp_http_request_duration_seconds', 'method="POST",route="/api/register-key",status="400"'), 1);
      assert.equal(count('kp_gateway_request_duration_seconds', 'status="200"'), 1);
      assert.equal(value('kp_gateway_refusals_total', { code: 'invalid_api_key' }), 1);
      assert.equal(value('kp_storage_error', { store: 'keys' }), 0);
      assert.equal(value('kp_gateway_inflight_requests'), 0);
      assert.equal(families.get('kp_http_request_duration_seconds')!.type, 'HISTOGRAM');
      assert.ok(families.has('kp_process_resident_memory_bytes'));
      assert.equal((await call(t.url, 'GET', '/metrics', { token: ADMIN })).status, 200);
    } finally {
      await t.stop();
    }
  });
});
