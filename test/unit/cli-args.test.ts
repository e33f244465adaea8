// CLI argument handling that needs no server: usage errors, exit codes, portal specs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ExitCode, main, type Io } from '../../src/admin/commands.js';
import { parsePortal, parsePortals } from '../../src/util/portal.js';

function io(env: Record<string, string> = {}): Io & { stdout: string; stderr: string } {
  const o = {
    stdout: '',
    stderr: '',
    env,
    out(t: string) {
      o.stdout += t;
    },
    err(t: string) {
      o.stderr += t;
    },
  };
  return o;
}

test('parsePortal: forms', () => {
  assert.deepEqual(parsePortal('127.0.0.1:13320', 1), { host: '127.0.0.1', port: 13320, tpgt: 1 });
  assert.deepEqual(parsePortal('127.0.0.1', 2), { host: '127.0.0.1', port: 3260, tpgt: 2 });
  assert.deepEqual(parsePortal('[::1]:3261', 1), { host: '::1', port: 3261, tpgt: 1 });
  assert.deepEqual(parsePortal('0.0.0.0:3260=192.0.2.10', 1), { host: '0.0.0.0', port: 3260, tpgt: 1, advertise: '192.0.2.10' });
  assert.deepEqual(parsePortal('[::]:3260=[2001:db8::1]', 1), { host: '::', port: 3260, tpgt: 1, advertise: '2001:db8::1' });
  assert.deepEqual(parsePortal('storage.example:3260', 1), { host: 'storage.example', port: 3260, tpgt: 1 });
  assert.deepEqual(
    parsePortals(['a:1', 'b:2']).map((p) => p.tpgt),
    [1, 2],
  );
});

test('parsePortal: errors', () => {
  assert.throws(() => parsePortal('::1:3260', 1), /IPv6 addresses in brackets/);
  assert.throws(() => parsePortal('127.0.0.1:0', 1), /port must be 1-65535/);
  assert.throws(() => parsePortal('127.0.0.1:99999', 1), /port must be 1-65535/);
  assert.throws(() => parsePortal('127.0.0.1:x', 1), /port must be/);
  assert.throws(() => parsePortal('[::1', 1), /missing "]"/);
  assert.throws(() => parsePortal(':3260', 1), /empty address/);
  assert.throws(() => parsePortal('a b:1', 1), /not an address/);
  fc.assert(
    fc.property(fc.string(), (s) => {
      try {
        const p = parsePortal(s, 1);
        assert.ok(p.port >= 1 && p.port <= 65535 && p.host.length > 0);
      } catch (err) {
        assert.ok(err instanceof Error && /^invalid portal/.test(err.message));
      }
    }),
  );
});

test('CLI: help, version, usage errors exit 2 with a hint', async () => {
  let o = io();
  assert.equal(await main(['--help'], o), ExitCode.OK);
  assert.match(o.stdout, /lunar volume create NAME --size SIZE/);
  assert.match(o.stdout, /Exit codes:/);
  o = io();
  assert.equal(await main(['--version'], o), ExitCode.OK);
  assert.match(o.stdout, /^lunar \d+\.\d+\.\d+\n$/);
  o = io();
  assert.equal(await main([], o), ExitCode.USAGE);
  for (const [args, msg] of [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['volume'], /missing subcommand/],
    [['volume', 'explode'], /unknown subcommand "explode"/],
    [['volume', 'create'], /missing NAME/],
    [['volume', 'create', 'a'], /--size SIZE is required/],
    [['volume', 'create', 'a', '--size', '12 parsecs'], /invalid size/],
    [['volume', 'create', 'a', '--size', '1G', '--nope'], /Unknown option '--nope'/],
    [['volume', 'create', 'a', '--size', '1G', '--chap', 'nocolon'], /--chap expects USER:SECRET/],
    [['volume', 'create', 'a', '--size', '1G', '--mutual-chap', 'u:secretsecret'], /--mutual-chap needs --chap too/],
    [['volume', 'create', 'a', 'b', '--size', '1G'], /unexpected argument "b"/],
    [['volume', 'resize', 'a'], /--size SIZE is required/],
    [['volume', 'publish', 'a'], /needs --node NODE and --initiator IQN/],
    [['serve', '--portal', '::1:3260'], /IPv6 addresses in brackets/],
    [['serve', '--discovery-chap', 'u:short'], /discovery CHAP secret must be at least 12 characters/],
  ] as Array<[string[], RegExp]>) {
    o = io();
    assert.equal(await main(args, o), ExitCode.USAGE, args.join(' '));
    assert.match(o.stderr, msg, args.join(' '));
    assert.match(o.stderr, /lunar --help/);
    assert.equal(o.stdout, '');
  }
});

test('CLI: no server → exit 3 and says how to start one', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-cli-'));
  try {
    const o = io({ LUNAR_DATA_DIR: d });
    assert.equal(await main(['volume', 'list'], o), ExitCode.NO_SERVER);
    assert.match(o.stderr, /no Lunar server at .*admin\.sock/);
    assert.match(o.stderr, /start one with `lunar serve --data-dir /);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});
