// Hostile peers for the soak test (test/e2e/soak-peers.test.ts), run as a child process of their own so
// that their CPU is not spent on the target's event loop:
//   node dist/test/support/peer-attackers.js '<JSON AttackConfig>'
// - idle: connections that send nothing, spread over source addresses; each one closed (refused at
//   accept, or at the login timeout) is opened again after reconnectMs;
// - slowloris: connections that trickle a Login PDU header one byte per second, opened again when closed;
// - fuzz: one peer that logs in (a Normal session to its own target) and sends framed headers with random
//   bytes (initiator opcodes but Logout, data segment length 0, no AHS) in a loop, plus now and then a
//   connection that sends random bytes before login; its own session is opened again when closed.
// Every second it prints one JSON line of counters on stdout; it stops on SIGTERM or when stdin closes.

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { encodePdu } from '../../src/iscsi/pdu.js';
import { TestInitiator } from './iscsi-initiator.js';
import { loginRequest } from './iscsi-pdus.js';

export interface AttackConfig {
  readonly host: string;
  readonly port: number;
  readonly idle: { readonly count: number; readonly addresses: readonly string[] };
  readonly slowloris: { readonly count: number; readonly addresses: readonly string[] };
  readonly fuzz: { readonly address: string; readonly target: string; readonly initiatorName: string; readonly pdusPerSecond: number };
  readonly reconnectMs: number;
}

export interface AttackCounters {
  idleOpen: number;
  idleClosed: number;
  slowlorisOpen: number;
  slowlorisClosed: number;
  slowlorisBytes: number;
  fuzzPdus: number;
  fuzzSessions: number;
  fuzzGarbageConnections: number;
}

const c: AttackCounters = {
  idleOpen: 0,
  idleClosed: 0,
  slowlorisOpen: 0,
  slowlorisClosed: 0,
  slowlorisBytes: 0,
  fuzzPdus: 0,
  fuzzSessions: 0,
  fuzzGarbageConnections: 0,
};
let stopping = false;
const sockets = new Set<net.Socket>();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function connect(cfg: AttackConfig, from: string, onOpen: (s: net.Socket) => void, onClose: () => void): void {
  if (stopping) return;
  const s = net.connect({ host: cfg.host, port: cfg.port, localAddress: from });
  sockets.add(s);
  s.on('connect', () => onOpen(s));
  s.on('data', () => undefined);
  s.on('error', () => undefined);
  s.on('close', () => {
    sockets.delete(s);
    onClose();
  });
}

function idlePeer(cfg: AttackConfig, from: string): void {
  let open = false;
  connect(
    cfg,
    from,
    () => {
      open = true;
      c.idleOpen += 1;
    },
    () => {
      if (open) c.idleOpen -= 1;
      c.idleClosed += 1;
      setTimeout(() => idlePeer(cfg, from), cfg.reconnectMs).unref();
    },
  );
}

function slowlorisPeer(cfg: AttackConfig, from: string, isid: number): void {
  const header = encodePdu(loginRequest({ isid: isid.toString(16).padStart(12, '0'), dataSegmentLength: 64 }));
  let timer: NodeJS.Timeout | null = null;
  let open = false;
  connect(
    cfg,
    from,
    (s) => {
      open = true;
      c.slowlorisOpen += 1;
      let i = 0;
      timer = setInterval(() => {
        if (i >= header.length) return;
        s.write(header.subarray(i, i + 1));
        i += 1;
        c.slowlorisBytes += 1;
      }, 1000);
    },
    () => {
      if (timer) clearInterval(timer);
      if (open) c.slowlorisOpen -= 1;
      c.slowlorisClosed += 1;
      setTimeout(() => slowlorisPeer(cfg, from, isid), cfg.reconnectMs).unref();
    },
  );
}

/** A header the target must answer or drop without losing framing: DataSegmentLength and AHS length 0. */
function fuzzHeader(): Buffer {
  const h = randomBytes(48);
  const opcodes = [0x00, 0x01, 0x02, 0x04, 0x05, 0x10, 0x1c, 0x1d, 0x1e, 0x3f, 0x21, 0x07];
  h[0] = (h[0]! & 0x40) | opcodes[h[1]! % opcodes.length]!;
  h[4] = 0; // TotalAHSLength
  h.fill(0, 5, 8); // DataSegmentLength
  return h;
}

async function fuzzPeer(cfg: AttackConfig): Promise<void> {
  const batch = Math.max(1, Math.round(cfg.fuzz.pdusPerSecond / 20));
  while (!stopping) {
    let i: TestInitiator | null = null;
    try {
      i = await TestInitiator.connect(cfg.host, cfg.port, cfg.fuzz.address);
      sockets.add(i.socket);
      const r = await i.login({ initiatorName: cfg.fuzz.initiatorName, targetName: cfg.fuzz.target });
      if (r.statusClass !== 0) throw new Error(`fuzz login ${r.statusClass}/${r.statusDetail}`);
      c.fuzzSessions += 1;
      i.socket.removeAllListeners('data');
      i.socket.on('data', () => undefined);
      while (!stopping && !i.isClosed) {
        for (let k = 0; k < batch; k++) i.socket.write(fuzzHeader());
        c.fuzzPdus += batch;
        await sleep(50);
      }
    } catch {
      // closed by the target, or refused: again
    } finally {
      if (i) {
        i.socket.destroy();
        sockets.delete(i.socket);
      }
    }
    if (!stopping) await sleep(cfg.reconnectMs);
  }
}

function garbagePeer(cfg: AttackConfig): void {
  if (stopping) return;
  connect(
    cfg,
    cfg.fuzz.address,
    (s) => {
      c.fuzzGarbageConnections += 1;
      // More than a header and its largest AHS (48 + 255 × 4 bytes): answered at once, not at the login timeout.
      s.write(randomBytes(1100 + (randomBytes(1)[0]! % 200)));
    },
    () => setTimeout(() => garbagePeer(cfg), 200).unref(),
  );
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as AttackConfig;
  const keepAlive = setInterval(() => process.stdout.write(`${JSON.stringify(c)}\n`), 1000);
  const stop = (): void => {
    stopping = true;
    clearInterval(keepAlive);
    for (const s of sockets) s.destroy();
    process.stdout.write(`${JSON.stringify(c)}\n`, () => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.stdin.on('end', stop);
  process.stdin.resume();
  void fuzzPeer(cfg);
  garbagePeer(cfg);
  // Open the connections in steps, so that the listen backlog does not overflow (SYN retries take 1 s).
  for (let k = 0; k < cfg.slowloris.count && !stopping; k++) {
    slowlorisPeer(cfg, cfg.slowloris.addresses[k % cfg.slowloris.addresses.length]!, 0x400000000000 + k);
    if (k % 100 === 99) await sleep(50);
  }
  for (let k = 0; k < cfg.idle.count && !stopping; k++) {
    idlePeer(cfg, cfg.idle.addresses[k % cfg.idle.addresses.length]!);
    if (k % 100 === 99) await sleep(50);
  }
}

void main();
