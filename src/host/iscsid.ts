// The node's initiator: its name (/etc/iscsi/initiatorname.iscsi, read by iscsid and iscsiadm) and whether
// iscsid answers. iscsiadm talks to iscsid over the abstract unix socket "ISCSIADM_ABSTRACT_NAMESPACE"
// (open-iscsi usr/mgmt_ipc.h), which belongs to the network namespace iscsid runs in: the host's, which a
// node plugin pod shares (hostNetwork). A connect that succeeds means iscsid is there (socket activation
// starts it on that connect when only iscsid.socket runs).

import net from 'node:net';
import { hostError } from './errors.js';
import type { HostFs } from './host-fs.js';

export const INITIATOR_NAME_FILE = '/etc/iscsi/initiatorname.iscsi';
export const ISCSID_ABSTRACT_SOCKET = '\0ISCSIADM_ABSTRACT_NAMESPACE';

/** InitiatorName= of the file's text (comments and blank lines skipped), or null. */
export function parseInitiatorName(text: string): string | null {
  for (const line of text.split('\n')) {
    const m = /^\s*InitiatorName\s*=\s*(\S+)\s*$/.exec(line);
    if (m) return m[1]!;
  }
  return null;
}

export async function readInitiatorName(fs: HostFs): Promise<string> {
  const text = await fs.readText(INITIATOR_NAME_FILE);
  if (text === null) {
    throw hostError(
      'precondition',
      `${INITIATOR_NAME_FILE} is missing on the node: install open-iscsi (it generates the file) or write "InitiatorName=iqn.…" into it`,
    );
  }
  const name = parseInitiatorName(text);
  if (name === null) throw hostError('precondition', `${INITIATOR_NAME_FILE} has no InitiatorName= line`);
  return name;
}

/** true when a connection to iscsid's socket succeeds within timeoutMs. */
export function iscsidReachable(path = ISCSID_ABSTRACT_SOCKET, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
