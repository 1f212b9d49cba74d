import type { Logger } from './log.js';
import type { AuditActor, AuditEntry, AuditLog, AuditPageOptions } from './store/audit.js';

/** Who did something, as services see it (routes work it out from credentials). */
export type Actor =
  | { kind: 'anonymous' }
  | { kind: 'user'; email: string; key: string }
  | { kind: 'holder'; key: string }
  | { kind: 'admin' }
  | { kind: 'system' };

export function auditActor(actor: Actor): AuditActor {
  return actor.kind === 'user' ? `user:${actor.email}` : actor.kind === 'holder' ? 'anonymous' : actor.kind;
}

/**
 * The audit trail as services use it. A record is written after the change it describes is durable,
 * so a failing audit disk is logged loudly rather than turned into an error for a request that
 * succeeded.
 */
export class Audit {
  constructor(private readonly log: AuditLog, private readonly logger: Logger) {}

  async record(actor: Actor | AuditActor, action: string, keyId?: string, details?: Record<string, unknown>): Promise<void> {
    try {
      await this.log.record(typeof actor === 'string' ? actor : auditActor(actor), action, keyId, details);
    } catch (err) {
      this.logger.error({ module: 'audit', err, action, key_id: keyId }, 'could not write the audit log');
    }
  }

  /** Settles once every record made so far is written: failures are recorded without holding up their 401. */
  flushed(): Promise<void> {
    return this.log.flushed();
  }

  page(o: AuditPageOptions): Promise<{ entries: AuditEntry[]; more: boolean }> {
    return this.log.page(o);
  }
}
