/**
 * A minimal browser for tests without Chromium: keeps cookies, reads the CSRF token from the last
 * page, posts forms as application/x-www-form-urlencoded. A POST answered with a redirect returns
 * that answer, and then loads the page it points to, as a browser does (so the next form carries
 * the token of the session as it now is: a sign-in starts a new one).
 */
export class Browser {
  cookies: Record<string, string> = {};
  csrf = '';
  html = '';
  private saved: Record<string, string> = {};

  constructor(private readonly base: string, private readonly headers: Record<string, string> = {}) {}

  private store(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i).trim();
      const value = decodeURIComponent(pair!.slice(i + 1).trim());
      const expired = attrs.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]!) < Date.now()) ||
        attrs.some((a) => /^\s*max-age=0\s*$/i.test(a));
      if (expired || value === '') delete this.cookies[name]; else this.cookies[name] = value;
    }
    this.saved = { ...this.cookies };
  }

  private cookieHeader(): string {
    return Object.entries(this.cookies).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('; ');
  }

  async get(path: string): Promise<{ status: number; html: string; location: string | null }> {
    const res = await fetch(this.base + path, { redirect: 'manual', headers: { Accept: 'text/html', Cookie: this.cookieHeader(), ...this.headers } });
    this.store(res);
    this.html = await res.text();
    const m = /name="_csrf" value="([^"]+)"/.exec(this.html);
    if (m) this.csrf = m[1]!;
    return { status: res.status, html: this.html, location: res.headers.get('location') };
  }

  async post(path: string, form: Record<string, unknown>, o: { csrf?: string | null } = {}): Promise<{ status: number; html: string; location: string | null }> {
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(form)) fields[k] = String(v);
    const token = o.csrf === undefined ? this.csrf : o.csrf;
    if (token !== null) fields._csrf = token;
    const res = await fetch(this.base + path, {
      method: 'POST', redirect: 'manual',
      headers: { Accept: 'text/html', 'Content-Type': 'application/x-www-form-urlencoded', Cookie: this.cookieHeader(), ...this.headers },
      body: new URLSearchParams(fields).toString(),
    });
    this.store(res);
    const html = await res.text();
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location?.startsWith('/')) {
      const saved = this.saved;
      await this.get(location);
      this.saved = saved;
    }
    return { status: res.status, html, location };
  }

  /** Puts back the cookies as they were after the last response before a sign-out (for table tests). */
  async restore(): Promise<void> {
    this.cookies = { ...this.savedBeforeSignOut };
  }

  private get savedBeforeSignOut(): Record<string, string> { return this.firstSession ?? this.saved; }
  private firstSession: Record<string, string> | null = null;

  /** Remembers the current cookies as the ones restore() brings back. */
  remember(): void { this.firstSession = { ...this.cookies }; }
}
