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
// Two csi-sanity passes: the whole suite against the driver as a CO sees it (driver-endpoint.ts: Node calls
// to the plugin, Identity and Controller calls to the controller, so node specs ControllerPublish first),
// then the Identity specs against the node plugin's own Identity.
// Exit code: the last non-zero csi-sanity exit, else 0. The last lines printed are each pass's spec counts
// (from ginkgo's JSON report): ran/passed/failed/skipped, each failed spec and each skipped spec with its reason.

import { spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bed, buildGuest, buildLunarDisk, type Guest } from './harness.js';
import { q } from './initiator.js';
import { startDriverEndpoint } from './driver-endpoint.js';
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

/** The subset of ginkgo v2's JSON report read here. */
interface GinkgoReport {
  SpecReports?: Array<{
    ContainerHierarchyTexts?: string[] | null;
    LeafNodeText?: string;
    LeafNodeType?: string;
    State?: string;
    Failure?: { Message?: string } | null;
  }>;
}

/**
 * Spec counts of a ginkgo JSON report: ran (passed + failed), passed, failed, skipped (by a Skip() in the
 * spec, with its reason) and not selected (filtered out by focus/skip); each failed and skipped spec's name.
 */
async function summarise(file: string): Promise<string> {
  let reports: GinkgoReport[];
  try {
    reports = JSON.parse(await readFile(file, 'utf8')) as GinkgoReport[];
  } catch (e) {
    return `  (no report ${file}: ${e instanceof Error ? e.message : String(e)})\n`;
  }
  const specs = reports.flatMap((r) => r.SpecReports ?? []).filter((s) => s.LeafNodeType === 'It');
  const name = (s: (typeof specs)[number]): string => [...(s.ContainerHierarchyTexts ?? []), s.LeafNodeText ?? ''].join(' ');
  const firstLine = (m: string | undefined): string => (m ?? '').trim().split('\n')[0] ?? '';
  const passed = specs.filter((s) => s.State === 'passed');
  const failed = specs.filter((s) => s.State !== 'passed' && s.State !== 'skipped' && s.State !== 'pending');
  const skipped = specs.filter((s) => s.State === 'skipped' && firstLine(s.Failure?.Message) !== '');
  const unselected = specs.filter((s) => s.State === 'skipped' && firstLine(s.Failure?.Message) === '');
  const pending = specs.filter((s) => s.State === 'pending');
  // Non-It nodes that failed (BeforeSuite, AfterSuite) fail the run too.
  const suiteFailures = reports
    .flatMap((r) => r.SpecReports ?? [])
    .filter((s) => s.LeafNodeType !== 'It' && s.State !== 'passed' && s.State !== 'skipped');
  let out =
    `  specs ${specs.length}: ran ${passed.length + failed.length}, passed ${passed.length}, failed ${failed.length}, ` +
    `skipped ${skipped.length}, not selected ${unselected.length}, pending ${pending.length}\n`;
  for (const s of failed) out += `  FAILED  ${name(s)} [${s.State}]: ${firstLine(s.Failure?.Message)}\n`;
  for (const s of suiteFailures) out += `  FAILED  ${s.LeafNodeType} [${s.State}]: ${firstLine(s.Failure?.Message)}\n`;
  for (const s of skipped) out += `  SKIPPED ${name(s)}: ${firstLine(s.Failure?.Message)}\n`;
  return out;
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
    const driver = await startDriverEndpoint(path.join(bed.runDir, 'driver.sock'), n.endpoint, ctl.endpoint);
    bed.onClose(() => driver.close());
    const common = [
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
      '--ginkgo.no-color',
    ];
    // Pass 1, the driver as a whole: Node calls reach the plugin in the guest, Identity and Controller calls
    // the controller (driver-endpoint.ts says why). Pass 2: the Identity specs against the node plugin's own
    // Identity, which pass 1 does not reach.
    const passes: Array<{ name: string; args: string[] }> = [
      {
        name: 'driver (Node → guest plugin, Identity + Controller → host controller)',
        args: [`--csi.endpoint=${driver.endpoint}`, `--csi.controllerendpoint=${ctl.endpoint}`, ...common, ...argv],
      },
      {
        name: 'node plugin Identity',
        args: [`--csi.endpoint=${n.endpoint}`, ...common, '--ginkgo.focus=Identity Service', ...argv],
      },
    ];
    const summaries: string[] = [];
    let code = 0;
    for (const [i, p] of passes.entries()) {
      const report = path.join(bed.runDir, `sanity-${i + 1}.json`);
      const args = [...p.args, `--ginkgo.json-report=${report}`];
      process.stdout.write(`\n=== pass ${i + 1}: ${p.name}\nrunning: ${sanity} ${args.join(' ')}\n`);
      const child = spawn(sanity, args, { stdio: ['ignore', 'inherit', 'inherit'] });
      const c = await new Promise<number>((r) => child.on('close', (x) => r(x ?? 1)));
      if (c !== 0) code = c;
      summaries.push(`pass ${i + 1} (${p.name}): csi-sanity exit ${c}\n${await summarise(report)}`);
    }
    process.stdout.write(
      `\nrelayed by the driver endpoint: ${driver.relayed.node} Node calls, ${driver.relayed.controller} Identity/Controller calls\n`,
    );
    if (code !== 0) process.stdout.write(`plugin log tail:\n${await n.logTail(40)}\n`);
    process.stdout.write(`\n${summaries.join('\n')}`);
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
