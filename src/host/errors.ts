// Typed errors of the host steps (src/host) and of the node operations over them (src/node). Each kind
// says what the CO should do next; src/csi/node.ts maps the kinds to gRPC status codes with one table.

/**
 * - timeout: a host command or a wait ran out of its time or the request's deadline (retry later);
 * - unavailable: the initiator cannot reach the target or a daemon (iscsid, multipathd) (retry later);
 * - failed: a host command failed for another reason (its exit code and stderr are in the message);
 * - busy: the device or mount point is in use (an open file, a holder) — kubelet retries;
 * - precondition: the node is in a state the call cannot start from (stale LUN that cannot be replaced,
 *   device that holds data blkid does not recognise, initiator name missing);
 * - not-found: the thing the call names does not exist (volume path, staged volume);
 * - conflict: the volume is staged or published with other arguments (CSI ALREADY_EXISTS).
 */
export type HostErrorKind = 'timeout' | 'unavailable' | 'failed' | 'busy' | 'precondition' | 'not-found' | 'conflict';

export class HostError extends Error {
  constructor(
    readonly kind: HostErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'HostError';
  }
}

export const hostError = (kind: HostErrorKind, message: string): HostError => new HostError(kind, message);
