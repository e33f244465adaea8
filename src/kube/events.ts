// Events on the PVC of a volume. The controller learns the PVC from the CreateVolume parameters the
// external-provisioner adds with --extra-create-metadata (csi.storage.k8s.io/pvc/name, pvc/namespace)
// and keeps them with the volume and in its volume_context (pvcName, pvcNamespace), which is how the node
// plugin knows them at NodeStageVolume. An Event is named after the PVC, its reason and message and this
// process, so a repeat within the process raises its count (409 on create -> patch) instead of adding one.
// Recording never throws: a failure is logged once per Event and the CSI call goes on.

import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../log.js';
import { KubeApiError } from './retry.js';
import type { KubeClient } from './client.js';
import { EVENT_REASONS, type EventReason, type EventSink, type PvcRef } from './types.js';

export { PVC_NAME_CONTEXT, PVC_NAME_PARAMETER, PVC_NAMESPACE_CONTEXT, PVC_NAMESPACE_PARAMETER, pvcRefFrom } from './types.js';

const MAX_MESSAGE = 1024; // the API server refuses Event messages over 1 KiB (events.k8s.io note field)

export interface PvcEventsOptions {
  readonly client: KubeClient;
  /** Event source component: lunar-controller or lunar-node. */
  readonly component: string;
  readonly host?: string;
  readonly logger: Logger;
  readonly now?: () => Date;
}

export class PvcEvents implements EventSink {
  private readonly counts = new Map<string, { count: number; first: Date }>();
  private readonly instance = randomBytes(4).toString('hex');
  private readonly now: () => Date;
  private readonly host: string;

  constructor(private readonly opts: PvcEventsOptions) {
    this.now = opts.now ?? (() => new Date());
    this.host = opts.host ?? hostname();
  }

  async record(pvc: PvcRef, reason: EventReason, message: string): Promise<void> {
    const text = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 1)}…` : message;
    const digest = createHash('sha256').update(`${pvc.namespace}/${pvc.name}\0${reason}\0${text}\0${this.instance}`).digest('hex');
    const name = `${pvc.name}.${digest.slice(0, 16)}`.slice(0, 253);
    const at = this.now();
    const seen = this.counts.get(name);
    try {
      if (seen) {
        seen.count += 1;
        await this.opts.client.patchEventCount(pvc.namespace, name, seen.count, at);
        return;
      }
      const info = await this.opts.client.getPvc(pvc.namespace, pvc.name);
      if (!info) {
        this.opts.logger.debug({ pvc: `${pvc.namespace}/${pvc.name}`, reason }, 'PVC not found; Event not recorded');
        return;
      }
      const entry = { count: 1, first: at };
      this.counts.set(name, entry);
      try {
        await this.opts.client.createEvent({
          name,
          namespace: pvc.namespace,
          involvedObject: { kind: 'PersistentVolumeClaim', apiVersion: 'v1', namespace: pvc.namespace, name: pvc.name, uid: info.uid },
          type: EVENT_REASONS[reason],
          reason,
          message: text,
          source: { component: this.opts.component, host: this.host },
          count: 1,
          firstTimestamp: at,
          lastTimestamp: at,
        });
      } catch (err) {
        // A create that timed out after the server stored it: the Event exists, count it again.
        if (!(err instanceof KubeApiError && err.status === 409)) throw err;
        entry.count += 1;
        await this.opts.client.patchEventCount(pvc.namespace, name, entry.count, at);
      }
    } catch (err) {
      this.opts.logger.warn(
        { pvc: `${pvc.namespace}/${pvc.name}`, reason, err: err instanceof Error ? err.message : String(err) },
        'could not record Event on the PVC',
      );
    }
  }
}
