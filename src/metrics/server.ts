// GET /metrics in Prometheus text format on the address LUNAR_METRICS_ADDRESS / --metrics-address names
// (":9873" binds every address, "host:port" one, "none" turns it off). Anything else answers 404.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import type { LunarMetrics } from './registry.js';

export interface MetricsServer {
  /** host:port actually bound. */
  readonly address: string;
  close(): Promise<void>;
}

/** [host, port] of ":PORT", "HOST:PORT" or "[v6]:PORT"; null for "none". */
export function parseMetricsAddress(address: string): { host: string | undefined; port: number } | null {
  if (address === 'none') return null;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : -1;
  if (!m || port > 65535) throw new Error(`metrics address ${JSON.stringify(address)}: expected :PORT, HOST:PORT or none`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port };
}

export async function startMetricsServer(address: string, metrics: LunarMetrics, logger: Logger): Promise<MetricsServer | null> {
  const where = parseMetricsAddress(address);
  if (!where) return null;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if ((req.method !== 'GET' && req.method !== 'HEAD') || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Lunar serves /metrics only\n');
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => {
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(where.port, where.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const bound = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  logger.info({ address: bound }, 'metrics listening on /metrics');
  return {
    address: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
