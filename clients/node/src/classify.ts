// What a handler's error tells the server: the class of failure a worker reports for a thrown
// error. The steering errors (Throttled, Transient, Permanent, Snooze) say it themselves; the
// worker's `classify` option decides for other errors; failing that, the usual transient
// suspects (a database deadlock or lock wait timeout, a reset or timed-out connection, a 503)
// are recognised by their codes, and anything else is retryable.
//
// Key decision: errors are matched by their fields (`name`, `errno`, `code`, `status`), never
// by `instanceof`, so errors from another copy of this package or from any driver count.

/** How a worker reports a failed run (`snooze` only from a thrown Snooze). */
export type ErrorClass = 'transient' | 'retryable' | 'permanent' | 'throttled';

/** A worker's own rules: a class for `err`, or undefined to apply the default rules. */
export type Classifier = (err: unknown) => ErrorClass | undefined;

const CLASSES = new Set<string>(['transient', 'retryable', 'permanent', 'throttled']);
const STEERING: Record<string, ErrorClass | 'snooze'> = {
  Throttled: 'throttled',
  Transient: 'transient',
  Permanent: 'permanent',
  Snooze: 'snooze',
};

/** MySQL/MariaDB ER_LOCK_DEADLOCK and ER_LOCK_WAIT_TIMEOUT, as `errno` (mysql, mysql2, mariadb). */
const MYSQL_ERRNOS = new Set([1213, 1205]);
/** Codes as drivers put them in `code`: MySQL's names, PostgreSQL's SQLSTATEs
 * (serialization_failure, deadlock_detected, as node-postgres reports them) and Node's socket
 * errors. */
const TRANSIENT_CODES = new Set(['ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT', '40001', '40P01', 'ECONNRESET', 'ETIMEDOUT']);
/** How deep to follow `cause` (and the `parent`/`original` of ORMs that wrap driver errors). */
const MAX_DEPTH = 5;

/**
 * The default rules: true for a MySQL/MariaDB deadlock or lock wait timeout (`errno` 1213 or
 * 1205, `code` ER_LOCK_DEADLOCK or ER_LOCK_WAIT_TIMEOUT), a PostgreSQL serialization failure or
 * deadlock (`code` or `sqlState` 40001 or 40P01), a connection reset or timed out (`code`
 * ECONNRESET or ETIMEDOUT), and an HTTP 503 (`status` or `statusCode` 503, also on `response`,
 * which covers a DroveError with status 503). The error's `cause` chain (and `parent` and
 * `original`, where ORMs keep the driver's error) is searched too.
 */
export function isTransientError(err: unknown): boolean {
  let seen: Set<unknown> | undefined;
  const queue: Array<{ e: unknown; depth: number }> = [{ e: err, depth: 0 }];
  while (queue.length > 0) {
    const { e, depth } = queue.shift()!;
    if (e === null || typeof e !== 'object') continue;
    seen ??= new Set();
    if (seen.has(e)) continue;
    seen.add(e);
    try {
      if (looksTransient(e as Record<string, unknown>)) return true;
      if (depth < MAX_DEPTH) {
        for (const key of ['cause', 'parent', 'original'] as const) {
          const inner = (e as Record<string, unknown>)[key];
          if (inner !== null && typeof inner === 'object') queue.push({ e: inner, depth: depth + 1 });
        }
      }
    } catch {
      // A getter that throws: this object tells nothing.
    }
  }
  return false;
}

function looksTransient(e: Record<string, unknown>): boolean {
  const { errno, code, sqlState, status, statusCode } = e;
  if (typeof errno === 'number' && MYSQL_ERRNOS.has(errno)) return true;
  if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
  if (sqlState === '40001' || sqlState === '40P01') return true;
  if (status === 503 || statusCode === 503) return true;
  const response = e.response as Record<string, unknown> | null | undefined;
  if (response !== null && typeof response === 'object' && (response.status === 503 || response.statusCode === 503)) return true;
  return false;
}

/**
 * How a worker reports `err` thrown by a handler: a steering error's own class (Throttled,
 * Transient, Permanent, Snooze, matched by name); else what `classify` says, when it says
 * something; else `transient` for the errors `isTransientError` recognises; else `retryable`.
 * A `classify` that throws is not caught here.
 */
export function classifyError(err: unknown, classify?: Classifier): ErrorClass | 'snooze' {
  const name = err !== null && typeof err === 'object' ? (err as { name?: unknown }).name : undefined;
  if (typeof name === 'string' && Object.hasOwn(STEERING, name)) return STEERING[name]!;
  if (classify) {
    const mine = classify(err);
    if (typeof mine === 'string' && CLASSES.has(mine)) return mine;
  }
  return isTransientError(err) ? 'transient' : 'retryable';
}
