// Schedules: recurring jobs the server enqueues, one per tick across every node
// (`/v1/schedules`). Settings go out in camelCase, converted field by field (a payload is sent
// as it is, never renamed); schedules and jobs come back as the server sent them.

import { DroveError } from './errors.js';
import type { Transport } from './http.js';
import type { Job, Schedule, SchedulePatch, ScheduleSpec } from './types.js';

/** The wire's name of each setting. */
const FIELDS: Record<string, string> = {
  cron: 'cron',
  timezone: 'timezone',
  queue: 'queue',
  payload: 'payload',
  kind: 'kind',
  key: 'key',
  group: 'group',
  priority: 'priority',
  maxAttempts: 'max_attempts',
  timeoutMs: 'timeout_ms',
  catchUp: 'catch_up',
  paused: 'paused',
};

/** Settings in the wire's names; `undefined` leaves a field out, `null` is kept (a patch's
 * "clear"). A setting this client does not know is sent snake_cased, its value untouched. */
function wire(settings: Record<string, unknown>): Record<string, unknown> {
  if (settings === null || typeof settings !== 'object') throw new TypeError('schedule settings must be an object');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(settings)) {
    if (v === undefined) continue;
    out[FIELDS[k] ?? k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  }
  return out;
}

function path(name: string): string {
  if (typeof name !== 'string' || name === '') throw new TypeError('a schedule needs a name');
  return `/v1/schedules/${encodeURIComponent(name)}`;
}

function notFound(err: unknown): boolean {
  return err instanceof DroveError && err.status === 404 && err.code === 'not_found';
}

/** `drove.schedules`. */
export class Schedules {
  /** @internal Use `drove.schedules`. */
  constructor(private readonly http: Transport) {}

  /**
   * Creates or replaces the schedule `name` (a queue-name pattern). Its next tick is the first
   * after now; replacing a schedule that keeps its pattern and time zone keeps its next tick.
   */
  async set<P = unknown>(name: string, spec: ScheduleSpec<P>): Promise<Schedule<P>> {
    return (await this.http.request<Schedule<P>>('PUT', path(name), wire(spec as unknown as Record<string, unknown>))).body;
  }

  /**
   * Changes some settings (a JSON merge patch): each field given replaces that setting (the
   * payload as a whole), `null` clears an optional one. A DroveError with status 404 when there
   * is no such schedule.
   */
  async patch<P = unknown>(name: string, changes: SchedulePatch<P>): Promise<Schedule<P>> {
    return (await this.http.request<Schedule<P>>('PATCH', path(name), wire(changes as Record<string, unknown>))).body;
  }

  /** The schedule, or null when there is none of that name. */
  async get<P = unknown>(name: string): Promise<Schedule<P> | null> {
    try {
      return (await this.http.request<Schedule<P>>('GET', path(name))).body;
    } catch (err) {
      if (notFound(err)) return null;
      throw err;
    }
  }

  /** Every schedule, by name. */
  async list(): Promise<Schedule[]> {
    return (await this.http.request<{ schedules: Schedule[] }>('GET', '/v1/schedules')).body.schedules;
  }

  /** Deletes the schedule (the jobs it enqueued stay): true, or false when there was none. */
  async delete(name: string): Promise<boolean> {
    try {
      await this.http.request<unknown>('DELETE', path(name));
      return true;
    } catch (err) {
      if (notFound(err)) return false;
      throw err;
    }
  }

  /** Stops enqueueing (`patch(name, { paused: true })`); 404 when there is no such schedule. */
  pause<P = unknown>(name: string): Promise<Schedule<P>> {
    return this.patch<P>(name, { paused: true });
  }

  /** Enqueues again from the next tick after now; the ticks missed while paused are skipped. */
  resume<P = unknown>(name: string): Promise<Schedule<P>> {
    return this.patch<P>(name, { paused: false });
  }

  /**
   * Enqueues the schedule's job now (also while paused); its ticks are unchanged. Answers the
   * job, as a submit does: with a key still held, the live job (`deduplicated: true`).
   */
  async runNow<P = unknown>(name: string): Promise<Job<P>> {
    return (await this.http.request<Job<P>>('POST', `${path(name)}/run`)).body;
  }
}
