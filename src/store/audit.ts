import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../clock.js';

export type AuditActor = 'admin' | 'system' | 'anonymous' | `user:${string}`;

export interface AuditEntry {
  at: string;
  actor: AuditActor;
  action: string;
  key_id?: string;
  details?: Record<string, unknown>;
}

/**
 * data/audit.jsonl: one line per administrative or security-relevant action. Lines hold key ids,
 * never keys. Appends are queued and written together; each append resolves once its line is
 * written (and synced to disk).
 */
export class AuditLog {
  readonly file: string;
  private fh: FileHandle | null = null;
  private pending: { line: string; done: (err?: Error) => void }[] = [];
  private writing: Promise<void> | null = null;

  constructor(dataDir: string, private readonly clock: Clock) {
    this.file = path.join(dataDir, 'audit.jsonl');
  }

  record(actor: AuditActor, action: string, keyId?: string, details?: Record<string, unknown>): Promise<void> {
    const entry: AuditEntry = { at: new Date(this.clock.now()).toISOString(), actor, action };
    if (keyId) entry.key_id = keyId;
    if (details && Object.keys(details).length) entry.details = details;
    return new Promise((resolve, reject) => {
      this.pending.push({ line: JSON.stringify(entry) + '\n', done: (err) => (err ? reject(err) : resolve()) });
      this.writing ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length) {
        const batch = this.pending;
        this.pending = [];
        try {
          this.fh ??= await open(this.file, 'a', 0o600);
          await this.fh.write(batch.map((b) => b.line).join(''));
          await this.fh.datasync();
          for (const b of batch) b.done();
        } catch (err) {
          for (const b of batch) b.done(err as Error);
        }
      }
    } finally {
      this.writing = null;
    }
  }

  async close(): Promise<void> {
    while (this.writing) await this.writing;
    await this.fh?.close();
    this.fh = null;
  }
}
