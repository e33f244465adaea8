// The package version, read once from package.json (two levels above dist/src/util or src/util).

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

function readVersion(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg: unknown = JSON.parse(readFileSync(join(here, rel), 'utf8'));
      if (
        typeof pkg === 'object' &&
        pkg !== null &&
        'name' in pkg &&
        pkg.name === 'lunar' &&
        'version' in pkg &&
        typeof pkg.version === 'string'
      ) {
        return pkg.version;
      }
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0';
}

export const LUNAR_VERSION: string = readVersion();
