// src/metrics: /metrics over HTTP parses as Prometheus text (test/support/prom-text.ts, strict) and its
// counters, histograms and gauges follow what was recorded.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { IoKind } from '../../src/scsi/types.js';
import { LunarMetrics } from '../../src/metrics/registry.js';
import { parseMetricsAddress, startMetricsServer, type MetricsServer } from '../../src/metrics/server.js';
import { parsePrometheusText, sampleValue } from '../support/prom-text.js';

const logger = pino({ level: 'silent' });

async function scrape(server: MetricsServer, path = '/metrics'): Promise<{ status: number; type: string; text: string }> {
  const r = await fetch(`http://${server.address}${path}`);
  return { status: r.status, type: r.headers.get('content-type') ?? '', text: await r.text() };
}

describe('metrics', () => {
  const metrics = new LunarMetrics('controller');
  let server: MetricsServer;
  before(async () => {
    const s = await startMetricsServer('127.0.0.1:0', metrics, logger);
    assert.ok(s);
    server = s;
  });
  after(() => server.close());

  it('parses addresses', () => {
    assert.deepEqual(parseMetricsAddress(':9873'), { host: undefined, port: 9873 });
    assert.deepEqual(parseMetricsAddress('[::1]:9'), { host: '::1', port: 9 });
    assert.equal(parseMetricsAddress('none'), null);
    assert.throws(() => parseMetricsAddress('9873'), /expected :PORT, HOST:PORT or none/);
  });

  it('serves Prometheus text; per-LU counters, bytes, errors and the latency histogram follow the I/O', async () => {
    const lu = metrics.lu('vol-a');
    lu.record(IoKind.Read, 4096, 0.0002, true);
    lu.record(IoKind.Read, 8192, 0.003, true);
    lu.record(IoKind.Write, 65536, 0.02, true);
    lu.record(IoKind.Other, 0, 0.00005, false);
    lu.record(IoKind.Write, 512, 20, true); // beyond the last bucket: +Inf only
    metrics.lu('vol-b');
    const r = await scrape(server);
    assert.equal(r.status, 200);
    assert.match(r.type, /^text\/plain; version=0\.0\.4/);
    const f = parsePrometheusText(r.text);
    assert.equal(f.get('lunar_lu_commands_total')?.type, 'counter');
    assert.equal(sampleValue(f, 'lunar_lu_commands_total', { volume: 'vol-a', op: 'read' }), 2);
    assert.equal(sampleValue(f, 'lunar_lu_commands_total', { volume: 'vol-a', op: 'write' }), 2);
    assert.equal(sampleValue(f, 'lunar_lu_commands_total', { volume: 'vol-a', op: 'other' }), 1);
    assert.equal(sampleValue(f, 'lunar_lu_commands_total', { volume: 'vol-b', op: 'read' }), 0);
    assert.equal(sampleValue(f, 'lunar_lu_bytes_total', { volume: 'vol-a', direction: 'read' }), 12288);
    assert.equal(sampleValue(f, 'lunar_lu_bytes_total', { volume: 'vol-a', direction: 'write' }), 66048);
    assert.equal(sampleValue(f, 'lunar_lu_errors_total', { volume: 'vol-a', op: 'other' }), 1);
    assert.equal(sampleValue(f, 'lunar_lu_errors_total', { volume: 'vol-a', op: 'read' }), 0);
    assert.equal(sampleValue(f, 'lunar_lu_commands_total', { volume: 'vol-a', op: 'flush' }), 0);
    assert.equal(f.get('lunar_lu_command_duration_seconds')?.type, 'histogram');
    const b = (le: string): number | undefined => sampleValue(f, 'lunar_lu_command_duration_seconds_bucket', { volume: 'vol-a', le });
    assert.equal(b('0.0001'), 1);
    assert.equal(b('0.00025'), 2);
    assert.equal(b('0.005'), 3);
    assert.equal(b('0.025'), 4);
    assert.equal(b('10'), 4);
    assert.equal(b('+Inf'), 5);
    assert.equal(sampleValue(f, 'lunar_lu_command_duration_seconds_count', { volume: 'vol-a' }), 5);
    assert.ok(Math.abs((sampleValue(f, 'lunar_lu_command_duration_seconds_sum', { volume: 'vol-a' }) ?? 0) - 20.02325) < 1e-9);
    lu.record(IoKind.Write, 4096, 0.001, true);
    const again = parsePrometheusText((await scrape(server)).text);
    assert.equal(sampleValue(again, 'lunar_lu_commands_total', { volume: 'vol-a', op: 'write' }), 3, 'counters move with the I/O');
    metrics.removeLu('vol-b');
    assert.equal(sampleValue(again, 'lunar_lu_commands_total', { volume: 'vol-b', op: 'read' }), 0);
    assert.equal(
      sampleValue(parsePrometheusText((await scrape(server)).text), 'lunar_lu_commands_total', { volume: 'vol-b', op: 'read' }),
      undefined,
    );
  });

  it('CSI calls by method and code with durations; node operations; sessions, paths and free capacity', async () => {
    metrics.observeCsiCall('Controller', 'CreateVolume', 'OK', 0.012);
    metrics.observeCsiCall('Controller', 'CreateVolume', 'ALREADY_EXISTS', 0.001);
    metrics.observeCsiCall('Controller', 'CreateVolume', 'OK', 0.02);
    metrics.observeNodeOperation('stage', true, 3.2);
    metrics.observeNodeOperation('unstage', false, 0.4);
    metrics.setSessionsSource(() => [['vol-a', 2]]);
    metrics.setPathsSource(() => [{ volume: 'vol-a', up: 1, down: 1 }]);
    metrics.setCapacitySource(() => Promise.resolve({ availableBytes: 123456789, totalBytes: 987654321 }));
    const f = parsePrometheusText((await scrape(server)).text);
    assert.equal(sampleValue(f, 'lunar_csi_calls_total', { method: 'CreateVolume', code: 'OK' }), 2);
    assert.equal(sampleValue(f, 'lunar_csi_calls_total', { method: 'CreateVolume', code: 'ALREADY_EXISTS' }), 1);
    assert.equal(sampleValue(f, 'lunar_csi_call_duration_seconds_count', { service: 'Controller', method: 'CreateVolume' }), 3);
    assert.equal(sampleValue(f, 'lunar_node_operation_duration_seconds_count', { operation: 'stage', result: 'ok' }), 1);
    assert.equal(sampleValue(f, 'lunar_node_operation_duration_seconds_bucket', { operation: 'stage', result: 'ok', le: '4' }), 1);
    assert.equal(sampleValue(f, 'lunar_node_operation_duration_seconds_bucket', { operation: 'stage', result: 'ok', le: '2' }), 0);
    assert.equal(sampleValue(f, 'lunar_volume_sessions', { volume: 'vol-a' }), 2);
    assert.equal(sampleValue(f, 'lunar_volume_paths', { volume: 'vol-a', state: 'down' }), 1);
    assert.equal(sampleValue(f, 'lunar_capacity_free_bytes'), 123456789);
    assert.equal(sampleValue(f, 'lunar_capacity_total_bytes'), 987654321);
    assert.ok(sampleValue(f, 'lunar_process_resident_memory_bytes') !== undefined, 'process metrics');
  });

  it('answers 404 off /metrics', async () => {
    assert.equal((await scrape(server, '/')).status, 404);
  });

  it('the strict reader refuses broken exposition text', () => {
    assert.throws(() => parsePrometheusText('x 1\n'), /no TYPE line/);
    assert.throws(() => parsePrometheusText('# TYPE x counter\nx{a="b} 1\n'), /unterminated|not a sample/);
    assert.throws(
      () => parsePrometheusText('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n'),
      /not cumulative/,
    );
  });
});
