// The cache slam: N concurrent requests for K items against the web service (web.mjs).
// Prints one JSON line: how many requests were answered and how many computations ran
// (distinct jobs behind the answers).
//
//   node slam.mjs http://127.0.0.1:3000 500 10

const [base = 'http://127.0.0.1:3000', n = '500', k = '10'] = process.argv.slice(2);
const started = Date.now();
const answers = await Promise.all(
  Array.from({ length: Number(n) }, async (_, i) => {
    const item = `item${i % Number(k)}`;
    const res = await fetch(`${base}/api?item=${item}`);
    return { item, status: res.status, body: await res.json() };
  }),
);
const ok = answers.filter((a) => a.status === 200);
const wrong = ok.filter((a) => a.body.item !== a.item).length;
console.log(
  JSON.stringify({
    requests: answers.length,
    answered: ok.length,
    wrongItem: wrong,
    computations: new Set(ok.map((a) => a.body.job)).size,
    ms: Date.now() - started,
    statuses: [...new Set(answers.map((a) => a.status))],
  }),
);
