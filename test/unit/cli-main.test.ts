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
import { startAdminServer } from '../../src/admin/server.js';
import { IscsiServer } from '../../src/iscsi/server.js';
import { VolumeTargetRegistry } from '../../src/target/registry.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { VolumeError, type VolumeService } from '../../src/volumes/types.js';

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

test('CLI: no server → exit 7 and says how to start one', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-cli-'));
  try {
    const o = io({ LUNAR_DATA_DIR: d });
    assert.equal(await main(['volume', 'list', '--wait', '0'], o), ExitCode.NOT_READY);
    assert.match(o.stderr, /no Lunar server at .*admin\.sock/);
    assert.match(o.stderr, /start one with `lunar serve --data-dir /);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('CLI: --wait bounds the wait for a server that is not there yet; bad values are usage errors', { timeout: 20_000 }, async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-cli-'));
  try {
    let o = io({ LUNAR_DATA_DIR: d });
    const t0 = Date.now();
    assert.equal(await main(['volume', 'list', '--wait', '1'], o), ExitCode.NOT_READY);
    const ms = Date.now() - t0;
    assert.ok(ms >= 950 && ms < 5000, `gave up after ${ms} ms`);
    assert.match(o.stderr, /no Lunar server at .*admin\.sock \(ENOENT\) after waiting 1\.\d s — start one with/);
    for (const bad of ['-1', 'soon', '', '1e9']) {
      o = io({ LUNAR_DATA_DIR: d });
      assert.equal(await main(['status', `--wait=${bad}`], o), ExitCode.USAGE, bad);
      assert.match(o.stderr, /--wait expects a number of seconds/);
    }
    // serve and node run a server themselves: no --wait.
    o = io({ LUNAR_DATA_DIR: d });
    assert.equal(await main(['serve', '--wait', '1'], o), ExitCode.USAGE);
    assert.match(USAGE, /--wait SECONDS \(default 5; 0: ask once\), else exit 7/);
    assert.match(USAGE, /7 server not reachable or not ready within --wait/);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test(
  'CLI: a server that is still starting is waited for; --wait 0 answers exit 7 "still starting" at once',
  { timeout: 30_000 },
  async () => {
    const d = await mkdtemp(join(tmpdir(), 'lunar-cli-'));
    const portals = [{ host: '127.0.0.1', port: 13339, tpgt: 1 }];
    const registry = new VolumeTargetRegistry(portals);
    const manager = await VolumeManager.open({ dataDir: d, portals, registry, sessions: new IscsiServer({ registry }) });
    // The admin socket of a server that says ready:false until `ready` is set, as src/server.ts does while loading.
    let ready = false;
    const server = await startAdminServer(join(d, 'admin.sock'), {
      volumes: (): VolumeService => {
        if (!ready) throw new VolumeError('failed-precondition', 'Lunar is still starting; retry in a moment');
        return manager;
      },
      allSessions: () => [],
      info: () => ({ ready, pid: 4242 }),
    });
    try {
      let o = io({ LUNAR_DATA_DIR: d });
      assert.equal(await main(['volume', 'list', '--wait', '0'], o), ExitCode.NOT_READY);
      assert.match(
        o.stderr,
        /the Lunar server at .*admin\.sock \(pid 4242\) is still starting after waiting 0\.\d s; retry, or wait longer with --wait/,
      );
      o = io({ LUNAR_DATA_DIR: d });
      assert.equal(await main(['volume', 'list', '--wait', '0.3'], o), ExitCode.NOT_READY);
      // Ready while the command waits: it goes on and succeeds.
      o = io({ LUNAR_DATA_DIR: d });
      const waiting = main(['volume', 'create', 'w', '--size', '1MiB', '--wait', '20'], o);
      await new Promise((r) => setTimeout(r, 500));
      ready = true;
      assert.equal(await waiting, ExitCode.OK, o.stderr);
      assert.match(o.stdout, /volume w \(vol-/);
    } finally {
      await server.close();
      await manager.close();
      await rm(d, { recursive: true, force: true });
    }
  },
);

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
    for (const args of [['volume', 'list'], ['snapshot', 'list'], ['orphans', 'list'], ['sessions'], ['status']].map((a) => [
      ...a,
      '--wait',
      '0',
    ])) {
      let o = io({ LUNAR_DATA_DIR: env });
      assert.equal(await main(args, o), ExitCode.NOT_READY, args.join(' '));
      assert.ok(o.stderr.includes(join(env, 'admin.sock')), o.stderr);
      o = io({ LUNAR_DATA_DIR: env });
      assert.equal(await main([...args, '--data-dir', flag], o), ExitCode.NOT_READY);
      assert.ok(o.stderr.includes(join(flag, 'admin.sock')), o.stderr);
      assert.ok(o.stderr.includes(`lunar serve --data-dir ${flag}`), o.stderr);
      o = io({ LUNAR_DATA_DIR: env });
      assert.equal(await main([...args, '--data-dir', ''], o), ExitCode.NOT_READY);
      assert.ok(o.stderr.includes(join(env, 'admin.sock')), 'an empty --data-dir counts as not given');
      // Neither: ./.lunar, shown relative to the working directory.
      const cwd = process.cwd();
      process.chdir(d);
      try {
        o = io();
        assert.equal(await main(args, o), ExitCode.NOT_READY);
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
