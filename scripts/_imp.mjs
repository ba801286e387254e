const t0 = performance.now();
const mods = process.argv.slice(2);
for (const m of mods) { const t = performance.now(); await import(m); console.log(m.split('/').slice(-2).join('/'), Math.round(performance.now() - t)); }
console.log('total', Math.round(performance.now() - t0));
