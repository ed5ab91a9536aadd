// One HTTP round trip to the server: JSON in, JSON out, the API's error format turned into
// DroveError. Nothing here retries; callers decide what is safe to repeat.
//
// The round trip goes through node:http (or node:https) on a keep-alive agent of the client's
// own, not through the global fetch: undici's fetch builds a Request, a web stream, an abort
// signal and a Response per call, and measured 650-725 us of CPU per one-by-one submit here
// (about 4x the server's cost of the same submit), which bounded a web tier's submits at
// ~1,900/s. A `fetch` given in the options is used as before (proxies, instrumentation).

import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

import { DroveError, KeyConflictError, LeaseLostError } from './errors.js';

export interface TransportOptions {
  /** The server, e.g. `http://127.0.0.1:7070`. */
  url: string;
  /** Sent as `Authorization: Bearer TOKEN` when the server has one. */
  token?: string | undefined;
  /** A fetch to use instead of the built-in transport (a proxy agent, instrumentation). */
  fetch?: typeof fetch | undefined;
  /**
   * Certificates (PEM) to trust for an `https://` server besides Node's own roots, for a server
   * with a certificate of your own CA (`drove serve --tls-cert`). `NODE_EXTRA_CA_CERTS` works too.
   */
  ca?: string | Buffer | Array<string | Buffer> | undefined;
}

export interface RequestOptions {
  signal?: AbortSignal | undefined;
  /** Names the job a `lease_lost` answer is about. */
  jobId?: string | undefined;
}

export interface Answer<T> {
  status: number;
  body: T;
}

const utf8 = new TextEncoder();

/** A request body that is already JSON text. */
export class RawBody {
  constructor(readonly text: string) {}
}

/** What one round trip answered. */
interface Raw {
  status: number;
  text: string;
}

export class Transport {
  readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly fetch: typeof fetch | undefined;
  private readonly agent: http.Agent | undefined;
  private readonly target: URL;

  constructor(opts: TransportOptions) {
    if (!opts || typeof opts.url !== 'string' || opts.url === '') {
      throw new TypeError('new Drove({ url }) needs the server URL, e.g. http://127.0.0.1:7070');
    }
    this.base = opts.url.replace(/\/+$/, '');
    this.headers = { accept: 'application/json' };
    if (opts.token) this.headers.authorization = `Bearer ${opts.token}`;
    this.target = new URL(this.base);
    this.fetch = opts.fetch;
    if (!this.fetch) {
      if (this.target.protocol !== 'http:' && this.target.protocol !== 'https:') {
        throw new TypeError(`new Drove({ url }): ${opts.url} is not an http:// or https:// URL`);
      }
      // Keep-alive, no cap on sockets (a worker's long poll holds one while its ends and
      // heartbeats use others); idle sockets are closed before the server's own idle timeout,
      // which it names in its Keep-Alive answer header.
      const agentOpts = { keepAlive: true, maxFreeSockets: 256, scheduling: 'lifo' as const };
      this.agent =
        this.target.protocol === 'https:'
          ? new https.Agent(opts.ca === undefined ? agentOpts : { ...agentOpts, ca: extendRoots(opts.ca) })
          : new http.Agent(agentOpts);
    }
  }

  /** Closes the idle keep-alive sockets (the client is done). */
  close(): void {
    this.agent?.destroy();
  }

  private roundTrip(method: string, path: string, headers: Record<string, string>, bytes: Uint8Array | undefined, signal: AbortSignal | undefined): Promise<Raw> {
    if (this.fetch) {
      const f = this.fetch;
      return (async () => {
        const res = await f(this.base + path, { method, headers, body: bytes, signal });
        return { status: res.status, text: await res.text().catch((err: unknown) => Promise.reject(Object.assign(new Error('cut off'), { cutOff: true, cause: err }))) };
      })();
    }
    return new Promise<Raw>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const mod = this.target.protocol === 'https:' ? https : http;
      if (bytes) headers['content-length'] = String(bytes.byteLength);
      const req = mod.request(
        {
          protocol: this.target.protocol,
          hostname: this.target.hostname,
          port: this.target.port,
          path: this.target.pathname.replace(/\/+$/, '') + path,
          method,
          headers,
          agent: this.agent,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            signal?.removeEventListener('abort', onAbort);
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
          });
          res.on('error', (err) => {
            signal?.removeEventListener('abort', onAbort);
            reject(Object.assign(new Error('cut off'), { cutOff: true, cause: err }));
          });
        },
      );
      const onAbort = () => req.destroy(signal!.reason as Error);
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => {
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      });
      req.end(bytes);
    });
  }

  async request<T>(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<Answer<T>> {
    const headers: Record<string, string> = { ...this.headers };
    let bytes: Uint8Array | undefined;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      // Bytes, not a string: undici's fetch (when one is given) streams a string body through a
      // much slower path (measured: 1.35 ms of CPU per request with a string, 0.6 ms with bytes).
      bytes = utf8.encode(body instanceof RawBody ? body.text : JSON.stringify(body));
    }
    let res: Raw;
    try {
      res = await this.roundTrip(method, path, headers, bytes, opts.signal);
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      if ((err as { cutOff?: boolean }).cutOff) {
        throw new DroveError(null, 'unreachable', `${method} ${path}: the answer was cut off`, undefined, { cause: (err as Error).cause });
      }
      const why = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
      throw new DroveError(null, 'unreachable', `${method} ${path}: no answer from ${this.base} (${why})`, undefined, { cause: err });
    }
    const ok = res.status >= 200 && res.status < 300;
    let parsed: unknown = null;
    if (res.text !== '') {
      try {
        parsed = JSON.parse(res.text);
      } catch {
        if (ok) throw new DroveError(res.status, 'bad_answer', `${method} ${path}: the answer is not JSON`);
      }
    }
    if (!ok) throw errorFrom(res.status, parsed, `${method} ${path}`, opts.jobId);
    return { status: res.status, body: parsed as T };
  }
}

/** Node's own roots plus `ca`: an agent's `ca` replaces the roots unless they are given too. */
function extendRoots(ca: string | Buffer | Array<string | Buffer>): Array<string | Buffer> {
  return [...tls.rootCertificates, ...(Array.isArray(ca) ? ca : [ca])];
}

/** The API's error body (`{"error": {code, message, field?}}`) as a typed error. */
export function errorFrom(status: number, body: unknown, what: string, jobId?: string): DroveError {
  const e = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' ? e.code : `http_${status}`;
  const message = typeof e?.message === 'string' ? e.message : `${what} answered ${status}`;
  const field = typeof e?.field === 'string' ? e.field : undefined;
  if (code === 'lease_lost') return new LeaseLostError(jobId ?? '', jobId ? `job ${jobId}: ${message}` : message, status);
  if (code === 'key_conflict') return new KeyConflictError(status, code, message, field);
  return new DroveError(status, code, message, field);
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** `camelCase` keys to `snake_case`, recursively through plain objects (settings only). */
export function snakeKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeKeys);
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue;
    out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = snakeKeys(v);
  }
  return out;
}
