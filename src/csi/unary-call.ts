// The wrapper around every CSI unary method: readiness, the service's in-flight guard, the mapping of
// errors to gRPC status codes, and one log line per call (method, object ids, what the answer says when
// the method names it, gRPC code, duration; request and response only at debug level, secrets redacted).
// Every message sent and every value logged is bounded here (bounded.ts), whatever the caller sent.

import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { boundedMessage, boundedValue } from './bounded.js';
import { CsiError, toCsiError } from './errors.js';
import { waitUntilFor, type InFlightGuard } from './in-flight.js';
import { redact } from './validate.js';
import { StepTimes } from '../util/steps.js';

/** What a handler learns about its call besides the request. */
export interface CallContext {
  /** Epoch milliseconds of the call's gRPC deadline; Infinity when the caller set none. */
  readonly deadline: number;
  /** Aborted when the caller cancels the call (or its deadline passes). */
  readonly signal: AbortSignal;
  /** The call's step timings (util/steps.ts), logged at debug level on its one line; absent = not timed. */
  readonly steps?: StepTimes;
}

/** What one RPC does, which objects it locks, and which ids go to its log line. */
export interface MethodSpec<Req, Res> {
  readonly call: (req: Req, ctx: CallContext) => Res | Promise<Res>;
  /** Keys of the objects the call works on ("volume:<id>"); a key ending in ":" (empty id) is not locked. */
  readonly locks?: (req: Req) => string[];
  readonly ids?: (req: Req) => Record<string, string>;
  /** What of a successful answer goes to the log line (e.g. the capacity an expansion returned). */
  readonly results?: (res: Res) => Record<string, string | number | boolean>;
  /** Calls that need the plugin ready answer UNAVAILABLE until it is; Identity calls never wait. */
  readonly needsReady: boolean;
  /** Logged at debug instead of info (capability and probe calls the sidecars repeat). */
  readonly quiet?: boolean;
}

/** What the methods of one service share. */
export interface ServiceContext {
  readonly service: string;
  readonly log: Logger;
  readonly ready: () => boolean;
  readonly guard: InFlightGuard;
  /** Told every answered call (metrics: calls by service, method and code, and their durations). */
  readonly observe?: CallObserver;
}

/** gRPC code as its name (OK, INVALID_ARGUMENT, ...); seconds from the call's arrival to its answer. */
export type CallObserver = (service: string, method: string, code: string, seconds: number) => void;

/** Wraps one method of a service; the type the service bindings receive. */
export type UnaryWrapper = <Req, Res>(method: string, spec: MethodSpec<Req, Res>) => grpc.handleUnaryCall<Req, Res>;

const CODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(grpc.status)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([k, v]) => [v, k]),
);

function deadlineMs(call: grpc.ServerUnaryCall<unknown, unknown>): number {
  const d = call.getDeadline();
  return d instanceof Date ? d.getTime() : d;
}

export function unaryCall<Req, Res>(ctx: ServiceContext, method: string, spec: MethodSpec<Req, Res>): grpc.handleUnaryCall<Req, Res> {
  const { log, service } = ctx;
  return (call, callback) => {
    const started = process.hrtime.bigint();
    const req = call.request;
    let ids: Record<string, string> = {};
    let release: (() => void) | null = null;
    const steps = new StepTimes();
    const finish = (err: CsiError | null, res?: Res): void => {
      release?.();
      release = null;
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const code = err ? err.code : grpc.status.OK;
      const codeName = CODE_NAMES[code] ?? String(code);
      ctx.observe?.(service, method, codeName, durationMs / 1000);
      const line: Record<string, unknown> = {
        rpc: method,
        service,
        ...(boundedValue(ids) as Record<string, unknown>),
        ...(!err && res !== undefined && spec.results ? spec.results(res) : {}),
        code: codeName,
        durationMs: Math.round(durationMs * 1000) / 1000,
      };
      // At debug level the same single line carries the request and response, secrets redacted.
      if (log.isLevelEnabled('debug')) {
        if (!steps.empty) line.steps = steps.summary();
        line.request = boundedValue(redact(req));
        if (!err) line.response = boundedValue(redact(res));
      }
      if (!err) {
        if (spec.quiet) log.debug(line, `${method} OK`);
        else log.info(line, `${method} OK`);
      } else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) {
        log.error({ ...line, err: boundedMessage(err.message) }, `${method} failed`);
      } else {
        log.warn({ ...line, err: boundedMessage(err.message) }, `${method} refused`);
      }
      if (err) callback({ code: err.code, details: boundedMessage(err.message) }, null);
      else callback(null, res);
    };
    let keys: string[];
    try {
      ids = spec.ids ? Object.fromEntries(Object.entries(spec.ids(req)).filter(([, v]) => v !== '')) : {};
      if (spec.needsReady && !ctx.ready()) {
        finish(new CsiError(grpc.status.UNAVAILABLE, 'Lunar is still starting; retry shortly'));
        return;
      }
      keys = spec.locks ? spec.locks(req).filter((k) => !k.endsWith(':')) : [];
    } catch (err) {
      finish(toCsiError(err));
      return;
    }
    const cancelled = new AbortController();
    call.once('cancelled', () => {
      cancelled.abort();
    });
    ctx.guard
      .acquire(keys, { waitUntil: waitUntilFor(deadlineMs(call)), signal: cancelled.signal })
      .then((releaseKeys) => {
        release = releaseKeys;
        return spec.call(req, { deadline: deadlineMs(call), signal: cancelled.signal, steps });
      })
      .then(
        (res) => {
          finish(null, res);
        },
        (err: unknown) => {
          finish(toCsiError(err));
        },
      );
  };
}
