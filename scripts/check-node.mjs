// npm puts node_modules/.bin first on PATH, so scripts run on the project's own Node (the "node"
// devDependency). This guard explains the fix when someone runs the tools with an older Node.
const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  console.error(
    `k8s-encrypt needs Node.js >= 22, this is ${process.version}. ` +
      'Run "npm ci" (it installs the project\'s own Node 24), then run scripts through npm, ' +
      'or put it first on PATH: export PATH="$PWD/node_modules/.bin:$PATH".',
  );
  process.exit(1);
}
