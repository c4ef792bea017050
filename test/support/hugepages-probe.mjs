// A stand-in for the CLI's entry (test/runtime/hugepages.test.ts): relaunches like bin/diffuse.js,
// then reports its environment, counts the signals it gets and ends with the code asked for.
import { withHugePages } from "../../bin/hugepages.js";

await withHugePages();
const got = [];
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => got.push(sig));
const [code, waitMs] = [Number(process.argv[2] ?? 0), Number(process.argv[3] ?? 0)];
console.log(
  JSON.stringify({
    pid: process.pid,
    tunables: process.env.GLIBC_TUNABLES ?? null,
    relaunched: Boolean(process.env.DIFFUSE_RELAUNCHED),
  }),
);
setTimeout(() => {
  console.log(JSON.stringify({ signals: got }));
  process.exitCode = code;
}, waitMs);
