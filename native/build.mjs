// Builds the lunar_native addon (native/lunar_native.c) with node-gyp when it is missing or older than its
// sources. Run by `npm ci` (package "install" script) and by `npm run build`.
// node-gyp compiles against the headers of the running Node: we point it at them (nodedir) so that no
// download is ever attempted — CI machines have no network beyond the package registries.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build', 'Release', 'lunar_native.node');
const sources = [join(root, 'native', 'lunar_native.c'), join(root, 'binding.gyp')];

const mtime = (p) => statSync(p).mtimeMs;
if (existsSync(out) && sources.every((s) => mtime(s) <= mtime(out))) process.exit(0);

/** A directory holding include/node/node_api.h for this Node, if one exists next to the binary. */
function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const candidate = resolve(dirname(process.execPath), '..');
  return existsSync(join(candidate, 'include', 'node', 'node_api.h')) ? candidate : undefined;
}

function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout.trim();
  const p = join(npmRoot, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (!existsSync(p)) throw new Error(`node-gyp not found (looked at ${p}); install npm's bundled node-gyp or set npm_config_node_gyp`);
  return p;
}

const dir = nodeDir();
const args = [nodeGyp(), 'rebuild', ...(dir ? [`--nodedir=${dir}`] : [])];
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  process.stderr.write(`native addon build failed (node ${args.join(' ')}); it needs a C compiler, make and python3\n`);
  process.exit(r.status ?? 1);
}
