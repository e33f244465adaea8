// Runs kubernetes-csi's csi-sanity against the node plugin in a QEMU guest (`lunar node`, endpoint
// forwarded to a unix socket, see node-bed.ts) and the controller on the host (`lunar serve`, 2 portals).
// csi-sanity is not part of the repository: build it by hand from kubernetes-csi/csi-test and pass its
// path. A script, not a test file: npm test does not need it and never skips it.
//
//   LUNAR_CSI_SANITY=/path/to/csi-sanity node dist/test/guest/csi-sanity-run.js [csi-sanity args...]
//
// Extra arguments go to csi-sanity (e.g. --ginkgo.focus=Node). csi-sanity creates, checks and removes its
// staging and target paths on the machine it runs on; here they must exist in the guest, so the runner
// hands it --csi.createmountpathcmd & co.: small scripts that call back into this process (unix socket
// <run dir>/paths.sock), which runs mkdir/rmdir/stat in the guest through the agent.
// Exit code: csi-sanity's. The last lines printed are the spec counts.

import { spawn } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bed, buildGuest, buildLunarDisk, type Guest } from './harness.js';
import { q } from './initiator.js';
import { KUBELET_DIR, MiB, NodePlugin, startController } from './node-bed.js';

const self = fileURLToPath(import.meta.url);

/** `csi-sanity-run.js --path-op OP PATH SOCKET`: what the path scripts run; prints the guest's answer. */
async function pathOpClient(op: string, p: string, sock: string): Promise<number> {
  return new Promise((resolve) => {
    const c = net.connect(sock, () => c.end(JSON.stringify({ op, path: p })));
    let buf = '';
    c.setEncoding('utf8').on('data', (d: string) => (buf += d));
    c.on('close', () => {
      const r = JSON.parse(buf || '{"code":1,"out":"","err":"no answer"}') as { code: number; out: string; err: string };
      process.stdout.write(r.out);
      process.stderr.write(r.err);
      resolve(r.code);
    });
    c.on('error', (e) => {
      process.stderr.write(`path op ${op} ${p}: ${e.message}\n`);
      resolve(1);
    });
  });
}

function pathOpScript(op: string, p: string): string {
  const P = q(p);
  switch (op) {
    case 'create':
      return `mkdir -p ${P} && echo ${P}`;
    case 'remove':
      return `if [ -d ${P} ]; then rmdir ${P}; else rm -f ${P}; fi`;
    case 'check':
      return `if [ -f ${P} ]; then echo file; elif [ -d ${P} ]; then echo directory; elif [ -e ${P} ]; then echo other; else echo not_found; fi`;
    default:
      throw new Error(`unknown path op ${op}`);
  }
}

async function servePathOps(g: Guest, sock: string): Promise<net.Server> {
  // allowHalfOpen: the client ends its side right after the request and waits for the answer; by default
  // the server would end its own side at that moment too, before the guest answered (csi-sanity then saw
  // "no answer" for every path operation).
  const srv = net.createServer({ allowHalfOpen: true }, (c) => {
    let buf = '';
    c.setEncoding('utf8').on('data', (d: string) => (buf += d));
    c.on('end', () => {
      void (async () => {
        try {
          const { op, path: p } = JSON.parse(buf) as { op: string; path: string };
          const r = await g.exec(pathOpScript(op, p), 30);
          c.end(JSON.stringify({ code: r.code, out: r.stdout, err: r.stderr }));
        } catch (e) {
          c.end(JSON.stringify({ code: 1, out: '', err: String(e) }));
        }
      })();
    });
  });
  await new Promise<void>((r) => srv.listen(sock, r));
  return srv;
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--path-op') return pathOpClient(argv[1]!, argv[2]!, argv[3]!);
  const sanity = process.env.LUNAR_CSI_SANITY;
  if (!sanity) {
    process.stderr.write('set LUNAR_CSI_SANITY to the path of a csi-sanity binary (kubernetes-csi/csi-test)\n');
    return 2;
  }
  const bed = await Bed.create(await buildGuest());
  try {
    const ctl = await startController(bed);
    const disk = await buildLunarDisk(bed.runDir);
    const g = await bed.bootGuest({ index: 0, extraDisk: disk });
    const n = new NodePlugin(g);
    bed.onClose(() => n.close());
    await n.start();
    const sock = path.join(bed.runDir, 'paths.sock');
    const srv = await servePathOps(g, sock);
    bed.onClose(() => new Promise<void>((r) => srv.close(() => r())));
    const cmds: Record<string, string> = {};
    for (const op of ['create', 'remove', 'check']) {
      const f = path.join(bed.runDir, `path-${op}.sh`);
      await writeFile(f, `#!/bin/sh\nexec ${q(process.execPath)} ${q(self)} --path-op ${op} "$1" ${q(sock)}\n`);
      await chmod(f, 0o755);
      cmds[op] = f;
    }
    const args = [
      `--csi.endpoint=${n.endpoint}`,
      `--csi.controllerendpoint=${ctl.endpoint}`,
      `--csi.mountdir=${KUBELET_DIR}/sanity/mount`,
      `--csi.stagingdir=${KUBELET_DIR}/sanity/staging`,
      `--csi.createmountpathcmd=${cmds.create}`,
      `--csi.createstagingpathcmd=${cmds.create}`,
      `--csi.removemountpathcmd=${cmds.remove}`,
      `--csi.removestagingpathcmd=${cmds.remove}`,
      `--csi.checkpathcmd=${cmds.check}`,
      `--csi.testvolumesize=${64 * MiB}`,
      `--csi.testvolumeexpandsize=${128 * MiB}`,
      '--ginkgo.v',
      ...argv,
    ];
    process.stdout.write(`running: ${sanity} ${args.join(' ')}\n`);
    const child = spawn(sanity, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      process.stdout.write(d);
    });
    const code = await new Promise<number>((r) => child.on('close', (c) => r(c ?? 1)));
    const counts = /Ran \d+ of \d+ Specs.*\n.*(?:SUCCESS|FAIL)!?.*/.exec(out);
    process.stdout.write(`\ncsi-sanity exit ${code}\n${counts ? counts[0] : '(no spec counts in the output)'}\n`);
    const failed = [...out.matchAll(/\[FAIL\] (.*)/g)].map((m) => m[1]);
    if (failed.length) process.stdout.write(`failed specs:\n${[...new Set(failed)].map((f) => `  ${f}`).join('\n')}\n`);
    if (code !== 0) process.stdout.write(`plugin log tail:\n${await n.logTail(40)}\n`);
    return code;
  } finally {
    await bed.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`csi-sanity run failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
