import ejs from 'ejs';
import type { Request, Response } from 'express';
import type { Actor } from '../../audit.js';
import type { AppError } from '../../errors.js';
import { limitSuspended } from '../../keys/quota.js';
import type { AppDeps, WebDeps } from './deps.js';
import { pickLocale, translator, type MessageKey, type Translate } from './i18n.js';

export interface PageOptions {
  title: string;
  /** Which menu the page belongs to, and which item is current. */
  area?: 'user' | 'admin';
  nav?: string;
  status?: number;
  [local: string]: unknown;
}

/**
 * A problem the portal reports (a /healthz reason code) in the reader's language, with the technical
 * detail after it for whoever has to fix it.
 */
export function reasonText(t: Translate, code: string | null | undefined, detail: string): string {
  const key = `reason.${code}` as MessageKey;
  const text = code ? t(key) : key;
  return text === key ? detail : t('reason.detail', { text, detail });
}

/** The banner a page shows while CLIProxyAPI is unreachable or refuses the portal. */
function bannerFor(deps: WebDeps, t: Translate, area: string): string | null {
  const s = deps.health.cliproxy();
  if (s.error_code === 'management_key_rejected') return t('banner.rejected');
  if (s.reachable === false) return t('banner.unreachable');
  if (s.error && area === 'admin') return t('banner.other', { error: reasonText(t, s.error_code, s.error) });
  const usageError = deps.health.usage().error;
  if (usageError && area === 'admin') return t('banner.usage', { error: reasonText(t, 'usage_source', usageError) });
  return null;
}

/** Renders a page with what every template needs: language, CSRF token, who is signed in, banner. */
export function renderPage(deps: WebDeps, req: Request, res: Response, view: string, o: PageOptions): void {
  const locale = pickLocale(req);
  const t = translator(locale);
  let actor: Actor;
  try { actor = deps.auth.sessionActor(req); } catch { actor = { kind: 'anonymous' }; }
  const area = o.area ?? 'user';
  res.status(o.status ?? 200);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Language', locale);
  res.setHeader('Vary', 'Accept-Language, Cookie');
  res.render(view, {
    ...o, area, nav: o.nav ?? '', t, locale, actor, csrf: deps.sessions.csrfToken(req, res),
    banner: bannerFor(deps, t, area), publicUrl: clientBaseUrl(deps, req), currentPath: req.originalUrl,
    // This portal as the reader reached it (for texts an admin passes on).
    portalUrl: `${req.protocol}://${req.get('host') ?? req.hostname}`,
    approvals: deps.registration.mode === 'approval',
    // An ISO instant as wall-clock time in TIMEZONE ('2026-11-23 00:00 +08:00'; with seconds if asked).
    localTime: (iso: string, seconds = false) => (seconds ? deps.zone.formatSeconds(Date.parse(iso)) : deps.zone.format(Date.parse(iso))),
    timeZone: deps.zone.name,
    // An email (or any long name) as HTML with a break chance after each @ and dot, so a narrow
    // column wraps it there rather than anywhere (use with <%- %>).
    breakable: (text: string) => ejs.escapeXML(text).replace(/([@.])/g, '$1<wbr>'),
    compact: (v: number) => compact(locale, v),
    // A key's status as its holder reads it: a suspension for a limit says so.
    statusText: (k: { status: string; suspension?: { reason: string } | null }) =>
      t(limitSuspended(k) ? 'status.limited' : `status.${k.status}` as MessageKey),
    // Daily-limit notices for this reader (views/partials/alerts.ejs), worked out only where it is included.
    limitAlerts: () => deps.alerts.forPage(actor, area),
    // An estimated cost in PRICE_CURRENCY ('≈ $1.23'), or '—' for usage without a price.
    money: (v: number | null) => money(locale, deps.prices.currency, v),
    currency: deps.prices.currency,
  });
}

const moneyFormats = new Map<string, Intl.NumberFormat>();
const compactFormats = new Map<string, Intl.NumberFormat>();

/** A chart axis figure in the reader's language ('1.2K', '1.2万'). */
export function compact(locale: string, v: number): string {
  let f = compactFormats.get(locale);
  if (!f) compactFormats.set(locale, f = new Intl.NumberFormat(locale, { notation: 'compact', maximumFractionDigits: 1 }));
  return f.format(v);
}

/** '≈ $1.23', with four decimals below one unit (a few requests cost fractions of a cent); '—' for null. */
export function money(locale: string, currency: string, v: number | null): string {
  if (v === null) return '—';
  const digits = Math.abs(v) < 1 ? 4 : 2;
  const key = `${locale}|${currency}|${digits}`;
  let f = moneyFormats.get(key);
  if (!f) moneyFormats.set(key, f = new Intl.NumberFormat(locale, { style: 'currency', currency, minimumFractionDigits: 2, maximumFractionDigits: digits }));
  return `≈ ${f.format(v)}`;
}

/** A form's problem as its page shows it: the status to answer and the message in the reader's language. */
export function problem(req: Request, err: AppError): { status: number; problem: string } {
  return { status: err.status, problem: err.text(pickLocale(req)) };
}

/** A path from a query parameter that stays on this site. */
export function localPath(value: unknown, fallback = '/'): string {
  return typeof value === 'string' && value.startsWith('/') && !value.startsWith('//') && !value.includes('\\') ? value : fallback;
}

/**
 * The address key holders put in their tools: the gateway when it is on (GATEWAY_PUBLIC_URL, else
 * the host this page was asked for with the gateway's port), else CLIPROXY_PUBLIC_URL.
 */
export function clientBaseUrl(deps: Pick<AppDeps, 'config' | 'gatewayPort'>, req: Request): string {
  if (deps.gatewayPort === null) return deps.config.CLIPROXY_PUBLIC_URL;
  if (deps.config.GATEWAY_PUBLIC_URL) return deps.config.GATEWAY_PUBLIC_URL;
  const host = req.hostname.includes(':') ? `[${req.hostname}]` : req.hostname;
  return `${req.protocol}://${host}:${deps.gatewayPort}`;
}
