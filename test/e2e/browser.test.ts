import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ADMIN, chat, startTestPortal, waitFor, type TestPortal } from '../support/harness.js';

/** Debian's Chromium (`.ci/run` installs it). Without it these tests say so and skip. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
/**
 * The pages are visited as colleagues on an intranet do: by a plain-HTTP hostname (the browser maps
 * it to 127.0.0.1), which is no secure context — unlike http://127.0.0.1, which browsers trust.
 */
const INTRANET_HOST = 'portal.intranet.test';
const INTRANET = `--host-resolver-rules=MAP ${INTRANET_HOST} 127.0.0.1`;
const SHOTS = process.env.SCREENSHOT_DIR;

async function shot(page: Page, name: string): Promise<void> {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

describe('in the browser', { skip: existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)` }, () => {
  let browser: Browser;
  let t: TestPortal;
  let site: string;
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: [...FLAGS, INTRANET], timeout: 30_000 });
    t = await startTestPortal({ env: { POOL_SIZE: '40' } });
    site = `http://${INTRANET_HOST}:${new URL(t.url).port}`;
  });
  after(async () => {
    await browser?.close();
    await t?.stop();
  });

  const newPage = async (locale = 'en-US', viewport = { width: 1200, height: 860 }) => {
    const context = await browser.newContext({ locale, viewport });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    return page;
  };

  it('register → key shown once → sign in with it → add a key → revoke one → sign out', async () => {
    const page = await newPage();
    await page.goto(`${site}/`);
    await shot(page, '01-home');
    await page.click('text=Get a key');
    await page.fill('#email', 'Mei.Lin@example.com');
    await page.fill('#name', '林美 <b>bold</b>');
    await page.fill('#label', 'work laptop');
    await shot(page, '02-register');
    await page.click('button[type=submit]');
    const key = (await page.textContent('#new-key'))!.trim();
    assert.match(key, /^usr_pool_\d{4}_[0-9a-f]{48}$/);
    assert.ok((await page.textContent('#setup-claude-3'))!.includes(key), 'ready-to-paste settings include the key');
    assert.ok((await page.textContent('#setup-claude-0'))!.includes(t.fake.url), 'and the public URL');
    assert.ok((await page.textContent('#setup-claude-1'))!.includes(`$env:ANTHROPIC_AUTH_TOKEN = "${key}"`), 'PowerShell too');
    assert.ok((await page.textContent('#setup-codex-0'))!.includes(`base_url = "${t.fake.url}/v1"`), 'and Codex');
    const flag = (await page.textContent('#setup-claude-4'))!;
    assert.deepEqual(JSON.parse(/^claude --settings '(.*)'$/.exec(flag.trim())![1]!).env.ANTHROPIC_AUTH_TOKEN, key, 'the flag form is valid JSON');
    await shot(page, '03-key-shown-once');
    await waitFor(async () => (await chat(t.fake, key)) === 200, 'the key to work');

    // Registering signed this browser in: "Go to my keys" needs no second step, and shows no key.
    await page.click('text=Go to my keys');
    await page.waitForURL(`${site}/my-keys`);
    assert.ok((await page.textContent('main'))!.includes('mei.lin@example.com'));
    assert.ok(!(await page.content()).includes(key), 'the key is not shown again anywhere');
    // Signed out, the key signs in again.
    await page.click('text=Sign out');
    await page.fill('#secret', key);
    await page.click('button[type=submit]');
    await page.waitForURL(`${site}/my-keys`);
    assert.ok((await page.textContent('main'))!.includes('mei.lin@example.com'));
    assert.ok(!(await page.content()).includes(key), 'the signed-in page shows the key masked only');
    assert.ok((await page.content()).includes('林美 &lt;b&gt;bold&lt;/b&gt;'), 'the name is escaped');
    await shot(page, '04-my-keys');

    await page.fill('#label', 'home desktop');
    await page.click('form[action="/my-keys/add"] button');
    const second = (await page.textContent('#new-key'))!.trim();
    assert.notEqual(second, key);
    await page.click('text=Go to my keys');
    assert.equal(await page.locator('#keys tbody tr').count(), 2);

    await page.locator('#keys tbody tr', { hasText: 'work laptop' }).locator('text=Revoke').click();
    await shot(page, '05-revoke-confirm');
    await page.click('button.danger');
    await page.waitForURL(/revoked=/);
    assert.ok((await page.textContent('.notice'))!.includes('was revoked'));
    assert.equal(await page.locator('#keys tbody tr').count(), 1, 'the session moved to the remaining key');
    await waitFor(async () => (await chat(t.fake, key)) === 401, 'the revoked key to be refused');

    await page.click('text=Sign out');
    await page.waitForSelector('#secret');
    await page.context().close();
  });

  it('copies the key on a plain-HTTP intranet address, where there is no Clipboard API', async () => {
    // Every page here is on a plain-HTTP intranet origin (see INTRANET): no navigator.clipboard.
    {
      const context = await browser.newContext({ locale: 'en-US' });
      // Only watches what the page copies (the copy itself is the page's own code path).
      await context.addInitScript({ content: `
        const original = document.execCommand.bind(document);
        document.execCommand = (command, ...rest) => {
          const result = original(command, ...rest);
          if (command === 'copy') window.copied = document.activeElement ? document.activeElement.value : '';
          return result;
        };` });
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      await page.goto(`${site}/register`);
      assert.equal(await page.evaluate('window.isSecureContext'), false, 'a plain-HTTP intranet origin');
      assert.equal(await page.evaluate('typeof navigator.clipboard'), 'undefined', 'no Clipboard API there');
      await page.fill('#email', 'plain-http@example.com');
      await page.click('button[type=submit]');
      // Until the referrer policy kept the Origin of same-site posts, this form failed its CSRF check here.
      await page.waitForSelector('#new-key').catch(async () => { throw new Error(`no key shown: ${await page.textContent('main')}`); });
      const key = (await page.textContent('#new-key'))!.trim();
      await page.click('button[data-copy="new-key"]');
      await page.waitForFunction('window.copied !== undefined');
      assert.equal(await page.evaluate('window.copied'), key, 'the whole key, copied');
      assert.equal((await page.textContent('button[data-copy="new-key"]'))!.trim(), 'Copied');
      await context.close();
    }
  });

  it('admin signs in and sees the person on the leaderboard; a wrong token is refused', async () => {
    const page = await newPage();
    await page.goto(`${site}/admin/users`);
    await page.waitForSelector('#secret'); // sent to sign in
    await page.fill('#secret', 'not-the-admin-token-at-all');
    await page.click('button[type=submit]');
    assert.ok((await page.textContent('.problem'))!.length > 0);
    await page.fill('#secret', ADMIN);
    await page.click('button[type=submit]');
    await page.waitForURL(`${site}/admin/users`);
    assert.ok((await page.textContent('table'))!.includes('mei.lin@example.com'));
    await shot(page, '06-admin-users');
    await page.locator('tbody tr', { hasText: 'mei.lin@example.com' }).locator('a').click();
    assert.ok((await page.textContent('h1'))!.includes('林美'));
    await shot(page, '07-admin-user');
    await page.goto(`${site}/admin/pool`);
    await page.fill('#count', '5');
    await page.click('form[action="/admin/pool"] button');
    await page.waitForURL(/minted=5/);
    await shot(page, '08-admin-pool');
    // A trial key: created with a label and a daily limit, shown once, then changed and revoked.
    await page.goto(`${site}/admin/keys`);
    await page.fill('#label', 'trial for the demo');
    await page.fill('#daily_limit', '20');
    await page.click('form[action="/admin/keys"] button[type="submit"]');
    const shown = (await page.textContent('#new-key'))!.trim();
    assert.match(shown, /^usr_pool_\d{4}_[0-9a-f]{48}$/);
    await shot(page, '11-admin-key-created');
    await page.click('a[href^="/admin/keys/"]');
    assert.ok(!(await page.content()).includes(shown), 'the key page shows it masked');
    await page.fill('#daily_limit', '30');
    await page.click('input[value="update"] ~ div button');
    await page.waitForURL(/done=update/);
    assert.equal(await page.inputValue('#daily_limit'), '30');
    await page.click('a.button.danger');
    await page.check('input[name="confirm"]');
    await page.click('input[value="revoke"] ~ div button.danger');
    await page.waitForURL(/done=revoke/);
    await shot(page, '12-admin-key-revoked');
    await page.goto(`${site}/admin/audit`);
    assert.ok((await page.textContent('tbody'))!.includes('Key revoked'), 'actions in words, not codes');
    assert.ok(!(await page.textContent('tbody'))!.includes('{'), 'details as fields, not JSON');
    await shot(page, '13-admin-audit');
    await page.context().close();
  });

  it('switches the language to Chinese and keeps it', async () => {
    const page = await newPage('en-US');
    await page.goto(`${site}/register`);
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    await page.click('a.lang');
    await page.waitForURL(`${site}/register`);
    assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
    assert.ok((await page.textContent('h1'))!.includes('申请密钥'));
    await page.goto(`${site}/`);
    assert.ok((await page.textContent('h1'))!.includes('团队'), 'the choice sticks');
    await shot(page, '09-home-zh');
    await page.context().close();
  });

  it('uses Chinese for a browser that asks for it, and fits a phone', async () => {
    const page = await newPage('zh-CN', { width: 390, height: 844 });
    await page.goto(`${site}/register`);
    assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
    assert.ok(overflow <= 0, `no sideways scrolling on a phone (overflow ${overflow}px)`);
    await shot(page, '10-register-phone-zh');
    await page.context().close();
  });

  it('fits every page on a 390-px phone and a 1280-px laptop, in both languages, with data in every table', async () => {
    // Data: a person with usage, a trial key, a revoked key, a long email and label.
    const reg = async (email: string, label: string, token?: string) => (await (await fetch(`${t.url}/api/register-key`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify({ email, label }),
    })).json()) as { key: string; key_id: string };
    const person = await reg('a.rather.long.email.address.for.layout@intranet.example.com', 'the workstation under the desk in room 4');
    const second = await reg('a.rather.long.email.address.for.layout@intranet.example.com', 'laptop', person.key);
    const trial = (await (await fetch(`${t.url}/admin/keys`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ label: 'visitor', daily_limit: 3 }) })).json()) as { key: string; key_id: string };
    await waitFor(async () => (await chat(t.fake, second.key)) === 200, 'keys live');
    for (const k of [person.key, person.key, trial.key]) await chat(t.fake, k);
    await fetch(`${t.url}/api/revoke-key`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${second.key}` }, body: JSON.stringify({ key: second.key }) });
    await fetch(`${t.url}/api/sync-usage`, { method: 'POST', headers: { Authorization: `Bearer ${ADMIN}` } });

    const email = encodeURIComponent('a.rather.long.email.address.for.layout@intranet.example.com');
    const holderPages = ['/my-keys', '/my-keys/requests'];
    const adminPages = ['/admin/users', `/admin/users/${email}`, '/admin/keys', `/admin/keys/${person.key_id}`, '/admin/usage', '/admin/pool', '/admin/prices', '/admin/audit', '/admin/log'];
    const problems: string[] = [];
    for (const [locale, lang] of [['en-US', 'en'], ['zh-CN', 'zh']] as const) {
      for (const width of [390, 1280]) {
        const page = await newPage(locale, { width, height: 900 });
        const check = async (path: string) => {
          await page.goto(`${site}${path}`);
          const m = await page.evaluate<{ over: number; cut: string[] }>(`(() => ({
            over: document.documentElement.scrollWidth - window.innerWidth,
            cut: [...document.querySelectorAll('.table-wrap:not(.log-table)')].filter((w) => w.scrollWidth > w.clientWidth + 1).map((w) => w.querySelector('th')?.textContent ?? '?'),
          }))()`);
          if (m.over > 0) problems.push(`${path} ${lang} ${width}px: the page is ${m.over}px wider than the screen`);
          if (m.cut.length) problems.push(`${path} ${lang} ${width}px: a table scrolls sideways (${m.cut.join(', ')})`);
          await shot(page, `fit-${path.replace(/[^a-z0-9]+/gi, '-')}-${lang}-${width}`);
        };
        await page.goto(`${site}/my-keys`);
        await page.fill('#secret', person.key);
        await Promise.all([page.waitForURL(`${site}/my-keys`), page.click('form[action="/my-keys/sign-in"] button[type=submit]')]);
        for (const path of holderPages) await check(path);
        await page.goto(`${site}/admin`);
        await page.fill('#secret', ADMIN);
        await Promise.all([page.waitForURL(/\/admin\/users/), page.click('form[action="/admin/sign-in"] button[type=submit]')]);
        for (const path of adminPages) await check(path);
        await page.context().close();
      }
    }
    assert.deepEqual(problems, []);
  });
});

