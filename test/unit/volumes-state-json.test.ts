// The state file's layout (src/volumes/state-json.ts): every field is checked on load and a wrong one is
// named by its JSON path; what formatState writes, parseState reads back unchanged (property test).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { formatState, parseState } from '../../src/volumes/state-json.js';
import { StateError, type SnapshotRecord, type StateData, type VolumeRecord } from '../../src/volumes/state.js';

const PATH = '/var/lib/lunar/state.json';
const VOL = 'vol-00000000000000a1';
const SNAP = 'snap-00000000000000b1';

/** A state with every field present, optional ones included. */
function fullState(): Record<string, unknown> {
  return {
    format: 'lunar-state',
    version: 1,
    server: { id: '7d3c5b8e-2f0a-4c1e-9b6d-5a4f3e2d1c0b', createdAt: '2026-11-01T00:00:00.000Z' },
    volumes: {
      [VOL]: {
        id: VOL,
        name: 'pvc-1',
        sizeBytes: 8388608,
        createdSizeBytes: 4194304,
        thin: false,
        naa: '6024c4e0123456789abcdef012345678',
        serial: VOL.slice(4),
        chap: { user: 'u', secret: 'secret-secret', mutualUser: 't', mutualSecret: 'other-secret' },
        allow: ['10.0.0.0/8'],
        masked: true,
        portals: ['127.0.0.1:3260'],
        publications: { n1: 'iqn.2026-11.test:n1' },
        source: { kind: 'snapshot', id: SNAP },
        parameters: { fsType: 'xfs' },
        createdAt: '2026-11-01T00:00:01.000Z',
        reservations: {
          '0': {
            generation: 7,
            registrations: [
              {
                initiatorPortName: 'iqn.2026-11.test:n1,i,0x400001370000',
                targetPortName: `iqn.2026-11.io.lunar:${VOL},t,0x0001`,
                relativeTargetPortId: 1,
                key: '1122334455667788',
              },
            ],
            reservation: { holder: '*', type: 7, key: '1122334455667788' },
            aptpl: true,
          },
        },
      },
    },
    snapshots: {
      [SNAP]: { id: SNAP, name: 'snap-1', sourceVolumeId: VOL, sizeBytes: 4194304, createdAt: '2026-11-01T00:00:02.000Z' },
    },
  };
}

/** Fields that may be absent, and objects that are maps (their entries may be absent, their values are records). */
const OPTIONAL = new Set(['source', 'mutualUser', 'mutualSecret']);
const MAPS = new Set(['volumes', 'snapshots', 'publications', 'parameters', 'reservations']);

/** Every required field of fullState() as [JSON path, containing object, key]. */
function requiredFields(): Array<{ path: string; remove: (s: Record<string, unknown>) => void }> {
  const out: Array<{ path: string; remove: (s: Record<string, unknown>) => void }> = [];
  const walk = (v: unknown, path: string, keys: Array<string | number>, isMap: boolean): void => {
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        walk(x, `${path}[${i}]`, [...keys, i], false);
      });
      return;
    }
    if (typeof v !== 'object' || v === null) return;
    for (const [k, x] of Object.entries(v)) {
      const here = isMap ? `${path}[${JSON.stringify(k)}]` : path === '' ? k : `${path}.${k}`;
      if (!isMap && !OPTIONAL.has(k) && k !== 'format' && k !== 'version') {
        const at = [...keys, k];
        out.push({
          path: here,
          remove: (s) => {
            let o: unknown = s;
            for (const key of at.slice(0, -1)) o = (o as Record<string | number, unknown>)[key];
            Reflect.deleteProperty(o as object, k);
          },
        });
      }
      walk(x, here, [...keys, k], !isMap && MAPS.has(k));
    }
  };
  walk(fullState(), '', [], false);
  return out;
}

function load(raw: unknown): StateData {
  return parseState(JSON.stringify(raw), PATH).data;
}

function problem(raw: unknown): string {
  try {
    load(raw);
  } catch (err) {
    assert.ok(err instanceof StateError, String(err));
    return err.message;
  }
  assert.fail('the state was accepted');
}

test('parseState: the full state loads, optional fields included', () => {
  const s = load(fullState());
  assert.equal(s.volumes[VOL]?.reservations['0']?.registrations[0]?.relativeTargetPortId, 1);
  assert.deepEqual(s.volumes[VOL].source, { kind: 'snapshot', id: SNAP });
  assert.equal(s.snapshots[SNAP]?.sourceVolumeId, VOL);
});

test('parseState: a file missing any required field fails, naming the field', () => {
  const fields = requiredFields();
  // server (3), volumes/snapshots, 15 volume fields, chap (2), reservation state (4 + 4 + 3), 5 snapshot fields
  assert.ok(fields.length >= 38, `only ${fields.length} fields walked`);
  for (const f of fields) {
    const s = fullState();
    f.remove(s);
    const m = problem(s);
    assert.ok(m.startsWith(`${PATH}: ${f.path}: missing (expected `), `${f.path}: ${m}`);
  }
  assert.ok(fields.some((f) => f.path === `volumes["${VOL}"].reservations`));
  assert.ok(fields.some((f) => f.path === `volumes["${VOL}"].reservations["0"].registrations[0].key`));
});

test('parseState: wrong values are named with what was expected and what was found', () => {
  const cases: Array<[(s: Record<string, unknown>) => void, string]> = [
    [(s) => (vol(s).sizeBytes = '8388608'), `volumes["${VOL}"].sizeBytes: expected a positive integer, got "8388608"`],
    [(s) => (vol(s).sizeBytes = 0), `volumes["${VOL}"].sizeBytes: expected a positive integer, got 0`],
    [(s) => (vol(s).thin = 'yes'), `volumes["${VOL}"].thin: expected true or false, got "yes"`],
    [(s) => (vol(s).allow = 'x'), `volumes["${VOL}"].allow: expected an array, got "x"`],
    [(s) => (vol(s).allow = [1]), `volumes["${VOL}"].allow[0]: expected a string, got 1`],
    [(s) => (vol(s).naa = 'abc'), `volumes["${VOL}"].naa: expected 32 hex digits (an NAA 6h designator), got "abc"`],
    [(s) => (vol(s).reservations = []), `volumes["${VOL}"].reservations: expected an object, got an array`],
    [(s) => (vol(s).source = { kind: 'disk', id: SNAP }), `volumes["${VOL}"].source.kind: expected "snapshot" or "volume", got "disk"`],
    [(s) => (vol(s).publications = { n1: '' }), `volumes["${VOL}"].publications["n1"]: expected a non-empty string, got ""`],
    [
      (s) => delete (vol(s).chap as Record<string, unknown>).mutualSecret,
      `volumes["${VOL}"].chap: mutualUser and mutualSecret must be given together`,
    ],
    [
      (s) => (vol(s).reservations = { lun0: (vol(s).reservations as Record<string, unknown>)['0'] }),
      `volumes["${VOL}"].reservations["lun0"]: bad key: expected a LUN number, got "lun0"`,
    ],
    [(s) => (vol(s).id = 'vol-00000000000000a2'), `volumes["${VOL}"].id: "vol-00000000000000a2" differs from its key "${VOL}"`],
    [(s) => (s.server = null), 'server: expected an object, got null'],
    [
      (s) => {
        const v = { ...vol(s), id: 'vol-00000000000000a2' };
        (s.volumes as Record<string, unknown>)['vol-00000000000000a2'] = v;
      },
      `volumes["vol-00000000000000a2"].name: "pvc-1" is also the name of volumes["${VOL}"]`,
    ],
  ];
  for (const [change, message] of cases) {
    const s = fullState();
    change(s);
    assert.equal(problem(s), `${PATH}: ${message}`);
  }
});

function vol(s: Record<string, unknown>): Record<string, unknown> {
  return (s.volumes as Record<string, Record<string, unknown>>)[VOL]!;
}

// ---- round trip ----------------------------------------------------------------------------------

const hex16 = fc.stringMatching(/^[0-9a-f]{16}$/);
const naa = fc.stringMatching(/^6[0-9a-f]{31}$/);
const text = fc.string({ minLength: 1, maxLength: 20 });

const reservationState = fc.record({
  generation: fc.integer({ min: 0, max: 0xffffffff }),
  registrations: fc.array(fc.record({ initiatorPortName: text, targetPortName: text, relativeTargetPortId: fc.nat(65535), key: hex16 }), {
    maxLength: 3,
  }),
  reservation: fc.option(fc.record({ holder: text, type: fc.integer({ min: 1, max: 8 }), key: hex16 }), { nil: null }),
  aptpl: fc.boolean(),
});

const chap = fc.oneof(
  fc.constant(null),
  fc.record({ user: text, secret: text }),
  fc.record({ user: text, secret: text, mutualUser: text, mutualSecret: text }),
);

/** A volume record without its id (given by position, so that ids and names are unique). */
const volumeBody = fc.record(
  {
    name: text,
    sizeBytes: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    createdSizeBytes: fc.integer({ min: 1, max: 2 ** 46 }),
    thin: fc.boolean(),
    naa,
    chap,
    allow: fc.array(fc.string(), { maxLength: 3 }),
    masked: fc.boolean(),
    portals: fc.option(fc.array(text, { maxLength: 3 }), { nil: null }),
    publications: fc.dictionary(fc.string(), text, { maxKeys: 3 }),
    source: fc.record({ kind: fc.constantFrom('snapshot' as const, 'volume' as const), id: hex16.map((h) => `vol-${h}`) }),
    parameters: fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }),
    createdAt: fc.string(),
    reservations: fc.dictionary(fc.nat(255).map(String), reservationState, { maxKeys: 2 }),
  },
  {
    requiredKeys: [
      'name',
      'sizeBytes',
      'createdSizeBytes',
      'thin',
      'naa',
      'chap',
      'allow',
      'masked',
      'portals',
      'publications',
      'parameters',
      'createdAt',
      'reservations',
    ],
  },
);

const snapshotBody = fc.record({
  name: text,
  sourceVolumeId: hex16.map((h) => `vol-${h}`),
  sizeBytes: fc.integer({ min: 1, max: 2 ** 46 }),
  createdAt: fc.string(),
});

const idAt = (prefix: string, i: number): string => `${prefix}-${(i + 1).toString(16).padStart(16, '0')}`;

const stateData: fc.Arbitrary<StateData> = fc
  .record({
    server: fc.record({ id: text, createdAt: fc.string() }),
    volumes: fc.array(volumeBody, { maxLength: 4 }),
    snapshots: fc.array(snapshotBody, { maxLength: 4 }),
  })
  .map((s): StateData => ({
    server: s.server,
    volumes: Object.fromEntries(
      s.volumes.map((v, i): [string, VolumeRecord] => {
        const id = idAt('vol', i);
        return [id, { ...v, id, name: `${v.name}#${i}`, serial: id.slice(4) }];
      }),
    ),
    snapshots: Object.fromEntries(
      s.snapshots.map((x, i): [string, SnapshotRecord] => {
        const id = idAt('snap', i);
        return [id, { ...x, id, name: `${x.name}#${i}` }];
      }),
    ),
  }));

test('property: parseState(formatState(state)) is the state, and formatting is stable', () => {
  fc.assert(
    fc.property(stateData, fc.nat(), (data, seq) => {
      const back = parseState(formatState(data, seq), PATH);
      assert.equal(back.version, 2);
      assert.equal(back.seq, seq);
      assert.deepEqual(back.data, JSON.parse(JSON.stringify(data)));
      const text2 = formatState(back.data, seq);
      assert.equal(formatState(parseState(text2, PATH).data, seq), text2);
    }),
    { numRuns: 300 },
  );
});

test('property: deleting any one required field of any generated record is refused, naming it', () => {
  const withRecords = stateData.filter((d) => Object.keys(d.volumes).length + Object.keys(d.snapshots).length > 0);
  fc.assert(
    fc.property(withRecords, fc.nat(), (data, pick) => {
      const raw = JSON.parse(formatState(data, 1)) as Record<'volumes' | 'snapshots', Record<string, Record<string, unknown>>>;
      const records = (['volumes', 'snapshots'] as const).flatMap((map) => Object.keys(raw[map]).map((id) => ({ map, id })));
      const { map, id } = records[pick % records.length]!;
      const target = raw[map][id]!;
      const keys = Object.keys(target).filter((k) => !OPTIONAL.has(k));
      const k = keys[Math.floor(pick / records.length) % keys.length]!;
      raw[map][id] = Object.fromEntries(Object.entries(target).filter(([key]) => key !== k));
      const expected = `${PATH}: ${map}[${JSON.stringify(id)}].${k}: missing (expected ${EXPECTED[map][k] ?? '?'})`;
      assert.throws(
        () => parseState(JSON.stringify(raw), PATH),
        (e: unknown) => e instanceof StateError && e.message === expected,
      );
    }),
    { numRuns: 300 },
  );
});

const EXPECTED: Record<'volumes' | 'snapshots', Record<string, string>> = {
  volumes: {
    id: 'a volume id (vol-<16 hex digits>)',
    name: 'a non-empty string',
    sizeBytes: 'a positive integer',
    createdSizeBytes: 'a positive integer',
    thin: 'true or false',
    naa: '32 hex digits (an NAA 6h designator)',
    serial: 'a non-empty string',
    chap: 'an object',
    allow: 'an array',
    masked: 'true or false',
    portals: 'an array',
    publications: 'an object',
    parameters: 'an object',
    createdAt: 'a string',
    reservations: 'an object',
  },
  snapshots: {
    id: 'a snapshot id (snap-<16 hex digits>)',
    name: 'a non-empty string',
    sourceVolumeId: 'a volume id (vol-<16 hex digits>)',
    sizeBytes: 'a positive integer',
    createdAt: 'a string',
  },
};
