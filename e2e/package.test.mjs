// herald.js as an npm package: `npm pack` of static/ gives herald.js and
// herald.d.ts only; installed into a fresh project, a typed usage of every
// option, event and action passes `tsc --strict`, and common mistakes fail
// it, one error each.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root } from "./support.mjs";

const tsc = join(root, "e2e", "node_modules", ".bin", "tsc");

test("the client packs, installs and type-checks as a typed npm package", () => {
  const work = mkdtempSync(join(tmpdir(), "herald-pack-"));
  const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", work],
    { cwd: join(root, "static"), encoding: "utf8" }));
  const files = packed[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ["herald.d.ts", "herald.js", "package.json"]);

  const app = join(work, "app");
  execFileSync("mkdir", ["-p", app]);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--offline", join(work, packed[0].filename)],
    { cwd: app, stdio: "pipe" });
  for (const file of ["usage.ts", "misuse.ts"]) copyFileSync(join(root, "e2e", "types", file), join(app, file));
  copyFileSync(join(root, "e2e", "types", "tsconfig.json"), join(app, "tsconfig.base.json"));
  // Checks one file with the project's options, as the package resolves for an app.
  const check = (file) => {
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ extends: "./tsconfig.base.json", files: [file] }));
    return spawnSync(tsc, ["-p", "tsconfig.json", "--pretty", "false"], { cwd: app, encoding: "utf8" });
  };
  const good = check("usage.ts");
  assert.equal(good.status, 0, good.stdout + good.stderr);

  const bad = check("misuse.ts");
  const errors = bad.stdout.split("\n").filter((line) => /^misuse\.ts\(\d+,\d+\): error TS/.test(line));
  const lines = new Set(errors.map((line) => Number(line.match(/\((\d+),/)[1])));
  // Lines 5, 6 and 8-13 of misuse.ts: one mistake each, each caught.
  assert.deepEqual([...lines].sort((a, b) => a - b), [5, 6, 8, 9, 10, 11, 12, 13], bad.stdout);
});
