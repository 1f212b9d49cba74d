import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { CorruptDataFile } from './atomic-file.js';
import { JsonDoc } from './json-doc.js';

/** Who a browser session is: a key holder (by the key id they signed in with) or the admin. */
export type SessionData = { kind: 'user'; key_id: string; email: string } | { kind: 'holder'; key_id: string } | { kind: 'admin'; token_fp: string };
export type StoredSession = SessionData & { created_at: number; expires_at: number };

interface SessionsFile { version: '1'; sessions: Record<string, StoredSession> }

/** Sessions one person (or the admin) may hold at once; signing in again ends the oldest. */
export const SESSIONS_PER_PERSON = 20;

const hashSid = (sid: string) => createHash('sha256').update(`kp-session:${sid}`).digest('base64url');
const owner = (s: SessionData) => (s.kind === 'admin' ? 'admin' : s.kind === 'holder' ? `key:${s.key_id}` : `user:${s.email}`);

/**
 * data/sessions.json: the browser sessions that are signed in, by the hash of their id (the file
 * alone signs nobody in). A session exists from its sign-in until its sign-out or expiry, so a
 * copied cookie stops working the moment its owner signs out. Losing the file signs everyone out.
 */
export class SessionStore {
  private constructor(private readonly doc: JsonDoc<SessionsFile>, private readonly now: () => number) {}

  static async open(dir: string, now: () => number): Promise<SessionStore> {
    const file = path.join(dir, 'sessions.json');
    const doc = await JsonDoc.open<SessionsFile>(file, () => ({ version: '1', sessions: {} }), (raw) => {
      const r = raw as Partial<SessionsFile>;
      if (r.version !== '1' || typeof r.sessions !== 'object' || r.sessions === null) throw new CorruptDataFile(file, 'it is not a version 1 sessions file');
      return r as SessionsFile;
    });
    return new SessionStore(doc, now);
  }

  /**
   * A new session, on disk before its id is returned (else StorageError). Expired sessions are
   * dropped, and so are the oldest of the same person beyond SESSIONS_PER_PERSON.
   */
  async create(data: SessionData, ttlMs: number): Promise<string> {
    const sid = randomBytes(24).toString('base64url');
    const now = this.now();
    await this.doc.change((d) => {
      const mine: [string, StoredSession][] = [];
      for (const [h, s] of Object.entries(d.sessions)) {
        if (s.expires_at <= now) delete d.sessions[h];
        else if (owner(s) === owner(data)) mine.push([h, s]);
      }
      mine.sort((a, b) => a[1].created_at - b[1].created_at);
      for (const [h] of mine.slice(0, Math.max(0, mine.length - SESSIONS_PER_PERSON + 1))) delete d.sessions[h];
      d.sessions[hashSid(sid)] = { ...data, created_at: now, expires_at: now + ttlMs };
    });
    return sid;
  }

  /** The live session with this id, if any. */
  get(sid: string): StoredSession | undefined {
    const h = hashSid(sid);
    const s = Object.hasOwn(this.doc.data.sessions, h) ? this.doc.data.sessions[h] : undefined;
    return s && s.expires_at > this.now() ? s : undefined;
  }

  /**
   * Ends a session. It ends at once for this process even when the disk refuses the write (the
   * next write that succeeds carries it); the StorageError is still thrown so the caller can say so.
   */
  async end(sid: string): Promise<void> {
    const h = hashSid(sid);
    if (!Object.hasOwn(this.doc.data.sessions, h)) return;
    await this.doc.change((d) => { delete d.sessions[h]; }, { keepOnFailure: true });
  }

  /** How many sessions are signed in (expired ones not counted). */
  count(): number {
    const now = this.now();
    return Object.values(this.doc.data.sessions).filter((s) => s.expires_at > now).length;
  }
}
