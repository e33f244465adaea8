// A strict reader of the Prometheus text exposition format (version 0.0.4), for tests that scrape
// /metrics: HELP/TYPE lines, metric and label name syntax, escaped label values, float values, every
// sample in a declared family, and histograms whose buckets are cumulative and end at +Inf == _count.

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  type: string;
  help: string;
  readonly samples: Sample[];
}

const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(s: string, line: number): number {
  // Prometheus reads values with Go's strconv.ParseFloat: NaN and Inf in any letter case.
  if (/^\+?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (/^nan$/i.test(s)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`line ${line}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

function parseLabels(s: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without =`);
    const name = s.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`);
    if (name in out) throw new Error(`line ${line}: label ${name} twice`);
    if (s[eq + 1] !== '"') throw new Error(`line ${line}: label ${name} value not quoted`);
    let j = eq + 2;
    let v = '';
    for (; j < s.length && s[j] !== '"'; j++) {
      if (s[j] === '\\') {
        const n = s[++j];
        if (n === 'n') v += '\n';
        else if (n === '\\' || n === '"') v += n;
        else throw new Error(`line ${line}: bad escape \\${n ?? ''}`);
      } else {
        v += s.charAt(j);
      }
    }
    if (s[j] !== '"') throw new Error(`line ${line}: unterminated label value`);
    out[name] = v;
    i = j + 1;
    if (s[i] === ',') i++;
    else if (i < s.length) throw new Error(`line ${line}: expected , between labels`);
  }
  return out;
}

function familyOf(families: Map<string, Family>, sample: string): Family | undefined {
  const direct = families.get(sample);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const get = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: '', help: '', samples: [] };
      families.set(name, f);
    }
    return f;
  };
  text.split('\n').forEach((raw, idx) => {
    const line = idx + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(raw);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC.test(name)) throw new Error(`line ${line}: bad metric name ${name}`);
      const f = get(name);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`line ${line}: bad type ${rest}`);
        if (f.type !== '') throw new Error(`line ${line}: second TYPE for ${name}`);
        if (f.samples.length > 0) throw new Error(`line ${line}: TYPE of ${name} after its samples`);
        f.type = rest;
      } else {
        f.help = rest;
      }
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(raw);
    if (!m) throw new Error(`line ${line}: not a sample: ${JSON.stringify(raw)}`);
    const name = m[1]!;
    const f = familyOf(families, name);
    if (!f || f.type === '') throw new Error(`line ${line}: sample ${name} has no TYPE line before it`);
    f.samples.push({ name, labels: parseLabels(m[2] ?? '', line), value: parseValue(m[3]!, line) });
  });
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of f.samples.filter((x) => x.name.endsWith('_bucket'))) {
      const { le, ...rest } = s.labels;
      if (le === undefined) throw new Error(`${s.name} without le`);
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      let prevLe = -Infinity;
      let prev = 0;
      for (const b of buckets) {
        const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
        if (!(le > prevLe)) throw new Error(`${f.name}${key}: buckets out of order`);
        if (b.value < prev) throw new Error(`${f.name}${key}: buckets not cumulative`);
        prevLe = le;
        prev = b.value;
      }
      if (prevLe !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
      const count = f.samples.find((s) => s.name === `${f.name}_count` && JSON.stringify(s.labels) === key);
      if (count?.value !== prev) throw new Error(`${f.name}${key}: _count ${count?.value ?? 'missing'} != +Inf bucket ${prev}`);
    }
  }
  return families;
}

/** The value of one sample: the family's sample whose labels include `labels`. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}
