// The `lunar` dispatcher (src/cli/main.ts) without a server: help, version, usage errors, exit codes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Io } from '../../src/cli/command.js';
import { ExitCode } from '../../src/cli/errors.js';
import { main, USAGE } from '../../src/cli/main.js';
import { parseTopology } from '../../src/cli/serve.js';

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
    // A value starting with "-" is the option's value, checked as one (not parseArgs' "ambiguous").
    [['volume', 'create', 'a', '--size', '-1'], /--size -1: a size must be positive/],
    [['volume', 'resize', 'a', '--size', '-5GiB'], /--size -5GiB: a size must be positive/],
    [['volume', 'create', 'a', '--size=-1'], /--size -1: a size must be positive/],
    [['orphans'], /missing subcommand \(list, adopt\)/],
    [['orphans', 'adopt', 'vol-1111111111111111.img'], /orphans adopt needs --name NAME/],
    [['volume', 'publish', 'a'], /needs --node NODE and --initiator IQN/],
    [['serve', '--portal', '::1:3260'], /IPv6 addresses in brackets/],
    [['serve', '--discovery-chap', 'u:short'], /discovery CHAP secret must be at least 12 characters/],
    [['serve', '--metrics-address', '9873'], /--metrics-address: .*expected :PORT, HOST:PORT or none/],
    [['serve', '--topology', 'zone'], /--topology "zone": expected KEY=VALUE/],
    [['serve', '--topology', 'Bad Key=x'], /expected KEY=VALUE with KEY a Kubernetes label key/],
    [['serve', '--topology', 'topology.iscsi.lunar.dev/zone=rack 1'], /"rack 1" is not a Kubernetes label value/],
    [['serve', '--topology', 'a=1,a=2'], /key a is given twice/],
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

test('CLI: --help after any command prints the same usage; unknown commands list every command', async () => {
  for (const args of [['serve'], ['volume'], ['volume', 'create'], ['snapshot'], ['orphans'], ['sessions'], ['status']]) {
    for (const flag of ['--help', '-h']) {
      const o = io();
      assert.equal(await main([...args, flag], o), ExitCode.OK, [...args, flag].join(' '));
      assert.equal(o.stdout, USAGE);
      assert.equal(o.stderr, '');
    }
  }
  const o = io();
  assert.equal(await main(['frobnicate'], o), ExitCode.USAGE);
  assert.match(o.stderr, /\(serve, node, volume, snapshot, orphans, sessions, status; see `lunar --help`\)/);
  // Each command's usage lines and option sections appear once, in the table's order.
  const order = [
    'lunar serve',
    'lunar volume create',
    'lunar snapshot create',
    'lunar orphans list',
    'lunar sessions',
    'lunar status',
    'serve:',
    'volume create:',
  ];
  const at = order.map((s) => USAGE.indexOf(s));
  assert.ok(
    at.every((i) => i >= 0),
    JSON.stringify(at),
  );
  assert.deepEqual(
    [...at].sort((a, b) => a - b),
    at,
  );
});

test('CLI: --data-dir, else LUNAR_DATA_DIR, else ./.lunar, for every command that talks to the server', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-cli-'));
  const env = join(d, 'from-env');
  const flag = join(d, 'from-flag');
  try {
    for (const args of [['volume', 'list'], ['snapshot', 'list'], ['orphans', 'list'], ['sessions'], ['status']]) {
      let o = io({ LUNAR_DATA_DIR: env });
      assert.equal(await main(args, o), ExitCode.NO_SERVER, args.join(' '));
      assert.ok(o.stderr.includes(join(env, 'admin.sock')), o.stderr);
      o = io({ LUNAR_DATA_DIR: env });
      assert.equal(await main([...args, '--data-dir', flag], o), ExitCode.NO_SERVER);
      assert.ok(o.stderr.includes(join(flag, 'admin.sock')), o.stderr);
      assert.ok(o.stderr.includes(`lunar serve --data-dir ${flag}`), o.stderr);
      o = io({ LUNAR_DATA_DIR: env });
      assert.equal(await main([...args, '--data-dir', ''], o), ExitCode.NO_SERVER);
      assert.ok(o.stderr.includes(join(env, 'admin.sock')), 'an empty --data-dir counts as not given');
      // Neither: ./.lunar, shown relative to the working directory.
      const cwd = process.cwd();
      process.chdir(d);
      try {
        o = io();
        assert.equal(await main(args, o), ExitCode.NO_SERVER);
        assert.match(o.stderr, /no Lunar server at \.lunar\/admin\.sock .*`lunar serve --data-dir \.lunar`/);
      } finally {
        process.chdir(cwd);
      }
    }
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('CLI: serve --topology takes label KEY=VALUE pairs (LUNAR_TOPOLOGY in the chart)', () => {
  assert.deepEqual(parseTopology('topology.iscsi.lunar.dev/zone=rack-1'), { 'topology.iscsi.lunar.dev/zone': 'rack-1' });
  assert.deepEqual(parseTopology(' zone=a , example.com/row=r_2.b '), { zone: 'a', 'example.com/row': 'r_2.b' });
  assert.deepEqual(parseTopology(''), {});
});
