// Bundles src/ into dist/ (one JS file, one CSS file, index.html) with every dependency,
// the world map included: the page loads nothing from outside the binary.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';

const out = 'dist';
mkdirSync(out, { recursive: true });
for (const f of readdirSync(out)) if (f !== '.gitkeep') rmSync(`${out}/${f}`, { recursive: true });

await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  outfile: `${out}/app.js`,
  loader: { '.json': 'json' },
  legalComments: 'linked',
  logLevel: 'warning',
});
copyFileSync('src/style.css', `${out}/style.css`);
copyFileSync('src/index.html', `${out}/index.html`);
console.log('topomap web: built dist/');
