import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { safeEqual } from '../keys/format.js';
import { CorruptDataFile } from './atomic-file.js';
import { JsonDoc } from './json-doc.js';

/**
 * A request for a key, where REGISTRATION=approval: it waits for an admin. Whoever asked holds a
 * claim code (shown once, like a key; only its hash is kept) with which they see their key once an
 * admin approves — the key is held here until then, and deleted when claimed.
 */
export interface RegistrationRequest {
  id: string;
  email: string;
  name: string;
  label: string;
  created_at: string;
  claim_hash: string;
  status: 'pending' | 'approved' | 'denied' | 'claimed';
  decided_at: string | null;
  /** The issued key, between the approval and the claim. */
  key: string | null;
  key_id: string | null;
}

interface RequestsFile { version: '1'; requests: Record<string, RegistrationRequest> }

export const hashClaim = (code: string) => createHash('sha256').update(`kp-claim:${code}`).digest('hex');

/** data/registration_requests.json: small, rewritten whole (atomically) on every change. */
export class RequestsStore {
  private constructor(private readonly doc: JsonDoc<RequestsFile>) {}

  static async open(dir: string): Promise<RequestsStore> {
    const doc = await JsonDoc.open<RequestsFile>(path.join(dir, 'registration_requests.json'), () => ({ version: '1', requests: {} }), (raw) => {
      const r = raw as Partial<RequestsFile>;
      if (r.version !== '1' || typeof r.requests !== 'object' || r.requests === null) {
        throw new CorruptDataFile(path.join(dir, 'registration_requests.json'), 'it is not a version 1 requests file');
      }
      return r as RequestsFile;
    });
    return new RequestsStore(doc);
  }

  private get all(): RegistrationRequest[] { return Object.values(this.doc.data.requests); }

  /** Newest first. */
  list(): RegistrationRequest[] {
    return this.all.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  }

  get(id: string): RegistrationRequest | undefined {
    return Object.hasOwn(this.doc.data.requests, id) ? this.doc.data.requests[id] : undefined;
  }

  pendingFor(email: string): RegistrationRequest | undefined {
    return this.all.find((r) => r.email === email && r.status === 'pending');
  }

  /** The request a claim code belongs to (compared as hashes: the code itself is never kept). */
  byClaim(code: string): RegistrationRequest | undefined {
    const h = hashClaim(code);
    return this.all.find((r) => safeEqual(r.claim_hash, h));
  }

  /** A new request and its claim code (returned once, never stored). */
  newRequest(f: { email: string; name: string; label: string; now: Date }): { request: RegistrationRequest; claim: string } {
    const claim = randomBytes(24).toString('base64url');
    const request: RegistrationRequest = {
      id: randomBytes(6).toString('hex'), email: f.email, name: f.name, label: f.label, created_at: f.now.toISOString(),
      claim_hash: hashClaim(claim), status: 'pending', decided_at: null, key: null, key_id: null,
    };
    return { request, claim };
  }

  /** Saves a request (new or changed); resolves once the file is on disk, else throws StorageError and keeps the old one. */
  put(r: RegistrationRequest): Promise<void> {
    return this.doc.change((d) => { d.requests[r.id] = r; });
  }
}
