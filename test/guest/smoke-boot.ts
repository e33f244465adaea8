// Manual smoke check of the bed: `node dist/test/guest/smoke-boot.js` boots one guest, prints timings and
// a few facts from inside it, and tears everything down. Not a test file (no *.test.ts).
import { Bed, buildGuest } from './harness.js';

const t0 = Date.now();
const dir = await buildGuest();
console.log(`image ${dir} (${Date.now() - t0} ms)`);
const bed = await Bed.create(dir);
try {
  const g = await bed.bootGuest({ index: 0 });
  console.log(`boot ${g.bootMs} ms, nics ${JSON.stringify([...g.nicNames])}`);
  console.log(await g.sh('uname -r; ip -br addr; systemctl is-active multipathd iscsid.socket || true; lsmod | wc -l; multipathd show wildcards | head -50 | tr -s " " | paste -sd" "'));
  const t1 = Date.now();
  console.log(await g.sh('/usr/local/bin/node -e "console.log(process.version)"'), `${Date.now() - t1} ms`);
} finally {
  await bed.close();
}
