/**
 * Finds the top-level `"model"` of a JSON object as its bytes stream past, without parsing the rest
 * or holding more than it has seen: the gateway reads it for keys restricted to some models, and
 * forwards the bytes it held as soon as the answer is known. Linear in the input, one pass.
 *
 * `model` is the value when it is a string, null when the body is not a JSON object, has no such
 * field, or has one that is not a string.
 */
export class ModelScanner {
  private depth = 0;
  private started = false;
  private inString = false;
  private escaped = false;
  /** At depth 1: the next string is a key (after `{` or `,`). */
  private expectKey = false;
  /** Bytes of the depth-1 key being read, or of the model value being read. */
  private collecting: number[] | null = null;
  private collectingValue = false;
  /** The last depth-1 key was "model" and its value has not started yet. */
  private awaitingValue = false;
  private lastKey: string | null = null;
  result: { model: string | null } | null = null;

  /** Feeds bytes; returns the result once it is known. */
  push(chunk: Uint8Array): { model: string | null } | null {
    for (let i = 0; i < chunk.length && !this.result; i++) this.step(chunk[i]!);
    return this.result;
  }

  /** The body ended: whatever is known now is the answer. */
  end(): { model: string | null } {
    this.result ??= { model: null };
    return this.result;
  }

  private done(model: string | null): void { this.result = { model }; }

  private step(b: number): void {
    if (this.inString) {
      if (this.collecting && this.collecting.length < 4096) this.collecting.push(b);
      if (this.escaped) { this.escaped = false; return; }
      if (b === 0x5c) { this.escaped = true; return; } // backslash
      if (b !== 0x22) return; // "
      this.inString = false;
      if (!this.collecting) return;
      const whole = this.collecting.length < 4096; // longer than any model name: not one
      const raw = this.collecting.slice(0, -1);
      this.collecting = null;
      let text: string | null = null;
      if (whole) try { text = JSON.parse(`"${Buffer.from(raw).toString('utf8')}"`) as string; } catch { text = null; }
      if (this.collectingValue) return this.done(text);
      this.lastKey = text;
      return;
    }
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) return;
    if (!this.started) {
      if (b === 0xef || b === 0xbb || b === 0xbf) return; // a byte-order mark
      if (b !== 0x7b) return this.done(null); // not an object
      this.started = true;
      this.depth = 1;
      this.expectKey = true;
      return;
    }
    if (this.awaitingValue) {
      this.awaitingValue = false;
      if (b !== 0x22) return this.done(null); // "model" is not a string
      this.inString = true;
      this.collecting = [];
      this.collectingValue = true;
      return;
    }
    switch (b) {
      case 0x22: // "
        this.inString = true;
        if (this.depth === 1 && this.expectKey) { this.collecting = []; this.expectKey = false; }
        return;
      case 0x3a: // :
        if (this.depth === 1 && this.lastKey === 'model') this.awaitingValue = true;
        this.lastKey = null;
        return;
      case 0x2c: // ,
        if (this.depth === 1) this.expectKey = true;
        return;
      case 0x7b: case 0x5b: // { [
        this.depth++;
        return;
      case 0x7d: case 0x5d: // } ]
        this.depth--;
        if (this.depth === 0) this.done(null); // the object ended without a model
        return;
      default:
        return;
    }
  }
}

/** The model a Gemini path names: `/v1beta/models/{model}:generateContent`. */
export function geminiModel(path: string): string | null {
  const m = /^\/v1beta\/models\/([^/:?]+)(?::|\/|$)/.exec(path);
  if (!m) return null;
  try { return decodeURIComponent(m[1]!); } catch { return null; }
}
