// The part of net.Socket that IscsiConnection uses, for unit tests that build a connection over no
// socket at all: addresses, the destroyed / ended / paused state and the calls that only change it.
// Tests extend it with the write behaviour they need (held writes, a high-water mark, counting).
import { EventEmitter } from 'node:events';

export class FakeSocketBase extends EventEmitter {
  readonly remoteAddress = '127.0.0.1';
  readonly localAddress = '127.0.0.1';
  readonly writableHighWaterMark = 16 * 1024;
  destroyed = false;
  writableEnded = false;
  paused = false;
  /** What own-socket.ts socketFd() reads; null once destroyed, as Node's handle. */
  _handle: { fd: number } | null = { fd: 57 };
  setNoDelay(): this {
    return this;
  }
  cork(): void {}
  uncork(): void {}
  isPaused(): boolean {
    return this.paused;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  end(): this {
    this.writableEnded = true;
    return this;
  }
  destroy(): this {
    this.destroyed = true;
    this._handle = null;
    return this;
  }
}
