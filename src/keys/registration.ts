import type { Audit, Actor } from '../audit.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import { fail } from '../errors.js';
import type { Events } from '../events.js';
import type { RegistrationRequest, RequestsStore } from '../store/requests-store.js';
import type { IssuedKey, KeyService } from './service.js';

export type RegistrationResult =
  | { kind: 'issued'; issued: IssuedKey }
  | { kind: 'requested'; request: RegistrationRequest; claim: string };

export type ClaimResult =
  | { state: 'pending' | 'denied' | 'claimed'; request: RegistrationRequest }
  | { state: 'issued'; request: RegistrationRequest; issued: IssuedKey };

/**
 * Who may get a key by themselves (REGISTRATION): `open` — anyone; `domains` — addresses of
 * ALLOWED_EMAIL_DOMAINS; `approval` — a request an admin approves (domains still apply when set).
 * One email is one person: a second key for an email needs one of its keys, or an admin.
 */
export class RegistrationService {
  constructor(private readonly d: { config: Config; keys: KeyService; requests: RequestsStore; audit: Audit; events: Events; clock: Clock }) {}

  get mode(): 'open' | 'domains' | 'approval' { return this.d.config.REGISTRATION; }

  private checkDomain(email: string, actor: Actor): void {
    const domains = this.d.config.ALLOWED_EMAIL_DOMAINS;
    if (!domains.length || actor.kind === 'admin') return;
    const domain = email.slice(email.lastIndexOf('@') + 1);
    if (!domains.some((d) => domain === d || domain.endsWith(`.${d}`))) {
      throw fail('email_domain_not_allowed', { domains: domains.map((d) => '@' + d).join(', ') });
    }
  }

  /**
   * POST /api/register-key and the /register form. An admin may register anyone (the mode and the
   * domains do not apply), and the key joins that email's account.
   */
  async register(input: { email: string; name?: string; label?: string }, actor: Actor): Promise<RegistrationResult> {
    const { config, keys, requests } = this.d;
    this.checkDomain(input.email, actor);
    const existing = keys.user(input.email);
    const isOwner = actor.kind === 'user' && actor.email === input.email;
    if (existing && existing.api_keys.length > 0 && !isOwner && actor.kind !== 'admin') throw fail('email_registered');
    if (this.mode === 'approval' && !isOwner && actor.kind !== 'admin') {
      if (requests.pendingFor(input.email)) throw fail('registration_pending');
      const { request, claim } = requests.newRequest({ email: input.email, name: input.name ?? '', label: input.label ?? '', now: new Date(this.d.clock.now()) });
      await requests.put(request);
      await this.d.audit.record(actor, 'registration.request', undefined, { email: input.email, request_id: request.id });
      return { kind: 'requested', request, claim };
    }
    const issued = await keys.issue({
      email: input.email, name: input.name, label: input.label ?? '', issuedBy: actor.kind === 'admin' ? 'admin' : 'self',
      dailyLimit: config.DEFAULT_DAILY_LIMIT, dailyTokenLimit: config.DEFAULT_DAILY_TOKEN_LIMIT,
      // An admin registering an email adds a key to that person's account, on purpose (POST /admin/keys
      // with an email is where an admin might not know the email is taken: there it must be said).
      samePerson: true,
    }, actor);
    return { kind: 'issued', issued };
  }

  requests(): RegistrationRequest[] { return this.d.requests.list(); }

  private pending(id: string): RegistrationRequest {
    const r = this.d.requests.get(id);
    if (!r) throw fail('request_not_found');
    if (r.status !== 'pending') throw fail('registration_decided', { status: r.status });
    return r;
  }

  /** An admin approves: the key is issued now and held for the requester's claim. */
  async approve(id: string, actor: Actor): Promise<RegistrationRequest> {
    const r = this.pending(id);
    const { config } = this.d;
    const issued = await this.d.keys.issue({
      email: r.email, name: r.name, label: r.label, issuedBy: 'approval',
      dailyLimit: config.DEFAULT_DAILY_LIMIT, dailyTokenLimit: config.DEFAULT_DAILY_TOKEN_LIMIT,
    }, actor);
    const approved: RegistrationRequest = { ...r, status: 'approved', decided_at: new Date(this.d.clock.now()).toISOString(), key: issued.key, key_id: issued.key_id };
    await this.d.requests.put(approved);
    await this.d.audit.record(actor, 'registration.approve', issued.key_id, { email: r.email, request_id: r.id });
    return approved;
  }

  async deny(id: string, actor: Actor): Promise<RegistrationRequest> {
    const r = this.pending(id);
    const denied: RegistrationRequest = { ...r, status: 'denied', decided_at: new Date(this.d.clock.now()).toISOString() };
    await this.d.requests.put(denied);
    await this.d.audit.record(actor, 'registration.deny', undefined, { email: r.email, request_id: r.id });
    return denied;
  }

  /** The requester's claim: the key once, after an approval; else where the request stands. */
  async claim(code: string): Promise<ClaimResult> {
    const r = code.length <= 100 ? this.d.requests.byClaim(code) : undefined;
    if (!r) throw fail('claim_not_found');
    if (r.status !== 'approved' || !r.key) return { state: r.status === 'approved' ? 'claimed' : r.status, request: r };
    const found = this.d.keys.find({ key: r.key });
    const claimed: RegistrationRequest = { ...r, status: 'claimed', key: null };
    await this.d.requests.put(claimed); // the key is shown now, and never again
    await this.d.audit.record({ kind: 'user', email: r.email, key: r.key }, 'registration.claim', r.key_id ?? undefined, { request_id: r.id });
    return { state: 'issued', request: claimed, issued: { key: found.key, key_id: r.key_id!, record: found.record } };
  }
}
