/**
 * Storage for one day's (or one hour's) aggregates: for each key slot, a row of counts per model.
 *
 * A day that is still receiving records is an OpenBlock (maps of Float64Array rows). A day that is
 * done is frozen into a FrozenBlock: sorted slots, offsets and varint-encoded rows — about 15 bytes
 * per (key, model) instead of ~200 — which is also exactly the bytes written to its checkpoint file,
 * so loading a day is a read with no parsing. A late record for a frozen day thaws it.
 */

/** Order of the fields in a row. */
export const FIELDS = ['requests', 'failed', 'tokens', 'input', 'output', 'reasoning', 'cached'] as const;
export type Field = typeof FIELDS[number];
export const NF = FIELDS.length;
const [TOK, IN, OUT] = [2, 3, 4];

export interface Block {
  /** Calls fn for every model the slot has a row for. The row must not be kept or changed. */
  forSlot(slot: number, fn: (model: number, row: ArrayLike<number>) => void): void;
  /** Every (slot, model, row), slots ascending. */
  forEach(fn: (slot: number, model: number, row: ArrayLike<number>) => void): void;
  readonly size: number;
}

export class OpenBlock implements Block {
  private readonly slots = new Map<number, Map<number, Float64Array>>();
  size = 0;

  row(slot: number, model: number): Float64Array {
    let m = this.slots.get(slot);
    if (!m) this.slots.set(slot, (m = new Map()));
    let r = m.get(model);
    if (!r) { m.set(model, (r = new Float64Array(NF))); this.size++; }
    return r;
  }

  forSlot(slot: number, fn: (model: number, row: ArrayLike<number>) => void): void {
    const m = this.slots.get(slot);
    if (m) for (const [model, r] of m) fn(model, r);
  }

  forEach(fn: (slot: number, model: number, row: ArrayLike<number>) => void): void {
    for (const slot of [...this.slots.keys()].sort((a, b) => a - b)) {
      for (const [model, r] of this.slots.get(slot)!) fn(slot, model, r);
    }
  }

  freeze(): FrozenBlock {
    const w = new Writer(this.size * 16 + 64);
    const slots = [...this.slots.keys()].sort((a, b) => a - b);
    const offsets = new Uint32Array(slots.length + 1);
    slots.forEach((slot, i) => {
      offsets[i] = w.pos;
      for (const [model, r] of this.slots.get(slot)!) writeRow(w, model, r);
    });
    offsets[slots.length] = w.pos;
    return new FrozenBlock(Uint32Array.from(slots), offsets, w.bytes(), this.size);
  }
}

export class FrozenBlock implements Block {
  constructor(private readonly slots: Uint32Array, private readonly offsets: Uint32Array, private readonly data: Uint8Array, readonly size: number) {}

  private indexOf(slot: number): number {
    let lo = 0;
    let hi = this.slots.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const s = this.slots[mid]!;
      if (s === slot) return mid;
      if (s < slot) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }

  forSlot(slot: number, fn: (model: number, row: ArrayLike<number>) => void): void {
    const i = this.indexOf(slot);
    if (i >= 0) this.decodeRange(this.offsets[i]!, this.offsets[i + 1]!, fn);
  }

  forEach(fn: (slot: number, model: number, row: ArrayLike<number>) => void): void {
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i]!;
      this.decodeRange(this.offsets[i]!, this.offsets[i + 1]!, (model, row) => fn(slot, model, row));
    }
  }

  private decodeRange(from: number, to: number, fn: (model: number, row: ArrayLike<number>) => void): void {
    const r = new Reader(this.data, from);
    const row = new Float64Array(NF);
    while (r.pos < to) {
      const model = r.uint();
      for (let f = 0; f < NF; f++) row[f] = r.uint();
      // Tokens are stored as their difference from input + output (usually 0, one byte).
      row[TOK] = row[IN]! + row[OUT]! + unzigzag(row[TOK]!);
      fn(model, row);
    }
  }

  thaw(): OpenBlock {
    const open = new OpenBlock();
    this.forEach((slot, model, row) => open.row(slot, model).set(row));
    return open;
  }

  /** Bytes of the block: u32 slot count, u32 data length, slots, offsets, data (little-endian). */
  encode(): Uint8Array {
    const n = this.slots.length;
    const out = new Uint8Array(8 + 4 * n + 4 * (n + 1) + this.data.length + 4);
    const v = new DataView(out.buffer);
    v.setUint32(0, n, true);
    v.setUint32(4, this.data.length, true);
    let p = 8;
    for (let i = 0; i < n; i++, p += 4) v.setUint32(p, this.slots[i]!, true);
    for (let i = 0; i <= n; i++, p += 4) v.setUint32(p, this.offsets[i]!, true);
    v.setUint32(p, this.size, true);
    out.set(this.data, p + 4);
    return out;
  }

  /** Reads a block written by encode() at `pos`; returns it and the position after it. */
  static decode(buf: Uint8Array, pos: number): { block: FrozenBlock; next: number } {
    const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const n = v.getUint32(pos, true);
    const len = v.getUint32(pos + 4, true);
    let p = pos + 8;
    const slots = new Uint32Array(n);
    for (let i = 0; i < n; i++, p += 4) slots[i] = v.getUint32(p, true);
    const offsets = new Uint32Array(n + 1);
    for (let i = 0; i <= n; i++, p += 4) offsets[i] = v.getUint32(p, true);
    const size = v.getUint32(p, true);
    p += 4;
    if (p + len > buf.length || (n > 0 && offsets[n]! !== len)) throw new Error('aggregate block is truncated or damaged');
    return { block: new FrozenBlock(slots, offsets, buf.subarray(p, p + len), size), next: p + len };
  }
}

export function frozen(b: Block): FrozenBlock {
  return b instanceof FrozenBlock ? b : (b as OpenBlock).freeze();
}

function writeRow(w: Writer, model: number, r: Float64Array): void {
  w.uint(model);
  for (let f = 0; f < NF; f++) w.uint(f === TOK ? zigzag(r[TOK]! - r[IN]! - r[OUT]!) : r[f]!);
}

const zigzag = (d: number) => (d >= 0 ? 2 * d : -2 * d - 1);
const unzigzag = (z: number) => (z % 2 === 0 ? z / 2 : -(z + 1) / 2);

/** LEB128 for non-negative integers up to 2^53 (arithmetic, not 32-bit bit operations). */
class Writer {
  pos = 0;
  private buf: Uint8Array;
  constructor(size: number) { this.buf = new Uint8Array(size); }

  uint(v: number): void {
    if (this.pos + 8 > this.buf.length) {
      const grown = new Uint8Array(this.buf.length * 2 + 16);
      grown.set(this.buf);
      this.buf = grown;
    }
    while (v >= 128) {
      this.buf[this.pos++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  bytes(): Uint8Array { return this.buf.slice(0, this.pos); }
}

class Reader {
  constructor(private readonly buf: Uint8Array, public pos: number) {}

  uint(): number {
    let b = this.buf[this.pos++]!;
    if (b < 128) return b;
    let v = b & 127;
    let mul = 128;
    do {
      b = this.buf[this.pos++]!;
      v += (b & 127) * mul;
      mul *= 128;
    } while (b >= 128);
    return v;
  }
}
