// Shared by the flow benchmark's scripts: the clock, a seeded random source, the lognormal
// service time, schedules and percentiles.

/** Epoch milliseconds with a fraction: the clock every process of the benchmark uses. */
export const now = () => performance.timeOrigin + performance.now();

/** `8@0,3@15,12@30` -> [[0 ms, 8], [15000 ms, 3], [30000 ms, 12]], sorted by time. */
export function parseSchedule(text) {
  const steps = String(text)
    .split(',')
    .filter(Boolean)
    .map((part) => {
      const [v, at = '0'] = part.split('@');
      const value = Number(v);
      const ms = Number(at) * 1000;
      if (!Number.isFinite(value) || value < 0 || !Number.isFinite(ms)) throw new Error(`bad schedule step ${part}`);
      return [ms, value];
    })
    .sort((a, b) => a[0] - b[0]);
  if (steps.length === 0) throw new Error('empty schedule');
  return steps;
}

/** [[ms, value]...] -> `value@seconds,...` */
export function formatSchedule(steps) {
  return steps.map(([ms, v]) => `${v}@${ms / 1000}`).join(',');
}

/** Deterministic per seed: mulberry32, uniform in [0, 1). */
export function rng(seed) {
  let a = seed >>> 0 || 1;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A lognormal sampler with the given mean (not median) and sigma. */
export function lognormal(rand, mean, sigma) {
  const mu = Math.log(mean) - (sigma * sigma) / 2;
  return () => {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return Math.exp(mu + sigma * z);
  };
}

/** Nearest-rank percentile (as drove-flow's `percentile`): NaN for no values. */
export function percentile(values, q) {
  if (values.length === 0) return NaN;
  const v = [...values].sort((a, b) => a - b);
  const rank = Math.min(v.length, Math.max(1, Math.ceil(q * v.length)));
  return v[rank - 1];
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return NaN;
  v.sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function mean(values) {
  return values.length === 0 ? NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Rounds for the JSON line: 3 significant decimals for ratios, keeps integers. */
export function round(x, digits = 3) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return x === undefined || Number.isNaN(x) ? null : x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
