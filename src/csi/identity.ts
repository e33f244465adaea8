// CSI Identity service: GetPluginInfo, GetPluginCapabilities, Probe (CSI spec "Identity Service RPC").

import { readFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { CsiError } from './errors.js';
import type { GetPluginCapabilitiesResponse, GetPluginInfoResponse, PluginCapability, ProbeResponse } from './types.js';

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

/** Lunar's version from package.json (the repository root is three levels above dist/src/csi/). */
export function lunarVersion(): string {
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'lunar' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0-unknown';
}

export interface IdentityOptions {
  readonly pluginName: string;
  readonly version: string;
  readonly ready: () => boolean;
  /** Set when nodes report a topology segment: advertises VOLUME_ACCESSIBILITY_CONSTRAINTS. */
  readonly topology?: Readonly<Record<string, string>>;
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

  async getPluginInfo(): Promise<GetPluginInfoResponse> {
    return { name: this.opts.pluginName, vendor_version: this.opts.version, manifest: {} };
  }

  async getPluginCapabilities(): Promise<GetPluginCapabilitiesResponse> {
    const capabilities: PluginCapability[] = [{ service: { type: 'CONTROLLER_SERVICE' } }];
    if (this.opts.topology && Object.keys(this.opts.topology).length > 0) {
      capabilities.push({ service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } });
    }
    // The LU grows while in use and initiators get CAPACITY DATA HAS CHANGED.
    capabilities.push({ volume_expansion: { type: 'ONLINE' } });
    return { capabilities };
  }

  /** ready=false while Lunar starts; FAILED_PRECONDITION ("plugin not healthy") if the check itself fails. */
  async probe(): Promise<ProbeResponse> {
    let ready: boolean;
    try {
      ready = this.opts.ready();
    } catch (err) {
      throw new CsiError(status.FAILED_PRECONDITION, `Lunar is not healthy: ${err instanceof Error ? err.message : String(err)}`);
    }
    return { ready: { value: ready } };
  }
}
