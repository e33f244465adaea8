// CSI Identity service: GetPluginInfo, GetPluginCapabilities, Probe (CSI spec "Identity Service RPC").

import { status } from '@grpc/grpc-js';
import { CsiError } from './errors.js';
import type {
  GetPluginCapabilitiesResponse,
  GetPluginInfoResponse,
  PluginCapability,
  ProbeResponse,
  VolumeExpansionType,
} from './types.js';

/**
 * The CSIDriver name (reverse-DNS style as CSI asks: "<plugin>.<vendor domain>"). It is also the
 * provisioner name in StorageClasses and the driver in PersistentVolumes, so it must never change once
 * volumes exist.
 */
export const DEFAULT_PLUGIN_NAME = 'iscsi.lunar.dev';

// GetPluginInfoResponse.name: "63 characters or less, beginning and ending with an alphanumeric
// character ([a-z0-9A-Z]) with dashes (-), dots (.), and alphanumerics between".
const PLUGIN_NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$/;

export function isValidPluginName(name: string): boolean {
  return PLUGIN_NAME_RE.test(name);
}

export interface IdentityOptions {
  readonly pluginName: string;
  readonly version: string;
  readonly ready: () => boolean;
  /** The plugin serves the Controller service: advertises CONTROLLER_SERVICE. */
  readonly controllerService: boolean;
  /** Set when nodes report a topology segment: advertises VOLUME_ACCESSIBILITY_CONSTRAINTS. */
  readonly topology?: Readonly<Record<string, string>>;
  /** Volume expansion the plugin supports (PluginCapability.VolumeExpansion); absent = none advertised. */
  readonly volumeExpansion?: VolumeExpansionType;
}

export class IdentityService {
  constructor(private readonly opts: IdentityOptions) {
    if (!isValidPluginName(opts.pluginName)) {
      throw new Error(
        `CSI plugin name ${JSON.stringify(opts.pluginName)} is not valid: at most 63 characters, letters, digits, '-' and '.', starting and ending with a letter or digit`,
      );
    }
    if (opts.version === '') throw new Error('CSI vendor_version must not be empty');
  }

  getPluginInfo(): GetPluginInfoResponse {
    return { name: this.opts.pluginName, vendor_version: this.opts.version, manifest: {} };
  }

  getPluginCapabilities(): GetPluginCapabilitiesResponse {
    const capabilities: PluginCapability[] = [];
    if (this.opts.controllerService) capabilities.push({ service: { type: 'CONTROLLER_SERVICE' } });
    if (this.opts.topology && Object.keys(this.opts.topology).length > 0) {
      capabilities.push({ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } });
    }
    if (this.opts.volumeExpansion) capabilities.push({ volume_expansion: { type: this.opts.volumeExpansion } });
    return { capabilities };
  }

  /** ready=false while Lunar starts; FAILED_PRECONDITION ("plugin not healthy") if the check itself fails. */
  probe(): ProbeResponse {
    let ready: boolean;
    try {
      ready = this.opts.ready();
    } catch (err) {
      throw new CsiError(status.FAILED_PRECONDITION, `Lunar is not healthy: ${err instanceof Error ? err.message : String(err)}`);
    }
    return { ready: { value: ready } };
  }
}
