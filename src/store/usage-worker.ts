// The usage writer thread: owns the only write connection to usage.db, so commits (and their
// fsyncs) never stop the portal's event loop, and nothing on that loop — a page, a long query, a
// burst of HTTP — delays a commit. Messages are handled in order; housekeeping (retention) works in
// small chunks and yields between them, so a batch of records waits at most one chunk.
import { parentPort, workerData } from 'node:worker_threads';
import { openUsageDb } from './usage-schema.js';
import { UsageWriter } from './usage-writer.js';

export type WorkerRequest =
  | { id: number; op: 'write'; rows: Parameters<UsageWriter['write']>[0] }
  | { id: number; op: 'prune'; eventsBefore: number | null; hoursBefore: number | null }
  | { id: number; op: 'meta'; name: string; value?: string }
  | { id: number; op: 'close' };

export type WorkerReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { code: string; message: string } };

const CHUNK = 2000;
const port = parentPort!;
const db = openUsageDb((workerData as { file: string }).file, { cacheMb: 16 });
const writer = new UsageWriter(db);

const yieldNow = () => new Promise<void>((resolve) => setImmediate(resolve));

async function handle(m: WorkerRequest): Promise<unknown> {
  switch (m.op) {
    case 'write': return writer.write(m.rows);
    case 'prune': {
      let events = 0;
      let hours = 0;
      for (let n = CHUNK; m.eventsBefore !== null && n === CHUNK; await yieldNow()) events += (n = writer.pruneEvents(m.eventsBefore, CHUNK));
      for (let n = CHUNK; m.hoursBefore !== null && n === CHUNK; await yieldNow()) hours += (n = writer.pruneHours(m.hoursBefore, CHUNK));
      return { events, hours };
    }
    case 'meta':
      if (m.value !== undefined) writer.setMeta(m.name, m.value);
      return writer.meta(m.name) ?? null;
    case 'close':
      try { db.pragma('wal_checkpoint(TRUNCATE)'); } finally { db.close(); }
      return null;
  }
}

port.on('message', (m: WorkerRequest) => {
  handle(m).then(
    (result) => port.postMessage({ id: m.id, ok: true, result } satisfies WorkerReply),
    (err: Error & { code?: string }) => port.postMessage({ id: m.id, ok: false, error: { code: String(err.code ?? err.name), message: err.message } } satisfies WorkerReply),
  );
});
