// CLI argument handling that needs no server: usage errors, exit codes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitCode, main, type Io } from '../../src/admin/commands.js';

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
