// BullMQ for Node, driven by benchmarks/peers/bullmq_node.py. Speaks the same stdout
// protocol as the Python workers: "READY", then "RESULT {json}".
//
//   node bullmq_node.cjs worker  --url U --queue Q --mode noop|io|latency|delayed
//                                --concurrency C --n N --cap S
//   node bullmq_node.cjs enqueue --url U --queue Q --file jobs.json [--bulk]
//   node bullmq_node.cjs fill    --url U --queue Q --file jobs.json
//   node bullmq_node.cjs produce --url U --queue Q --file jobs.json --rate R
//   node bullmq_node.cjs delayed --url U --queue Q --file jobs.json   (each job has "delay" s)
//
// bullmq is resolved through NODE_PATH (a scratch folder outside the repository).
"use strict";
const fs = require("fs");
const { Queue, Worker } = require("bullmq");

const IO_LATENCY_MS = 20;
const BULK_CHUNK = 1000;

function parseArgs(argv) {
  const out = { cmd: argv[0] };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) continue;
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) out[key] = true;
    else { out[key] = next; i++; }
  }
  return out;
}

function connection(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 6379), db: Number((u.pathname || "/0").slice(1) || 0),
           maxRetriesPerRequest: null };
}

const wallNow = () => (performance.timeOrigin + performance.now()) / 1000; // seconds, sub-ms
const emit = (line) => new Promise((resolve) => process.stdout.write(line + "\n", resolve));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function worker(a) {
  const n = Number(a.n), cap = Number(a.cap) * 1000, mode = a.mode;
  let count = 0, first = null, lastEnd = 0, finished = false;
  const samples = [];
  let finish;
  const done = new Promise((r) => { finish = r; });
  const w = new Worker(a.queue, async (job) => {
    const now = wallNow();
    if (first === null) first = performance.now();
    const p = job.data;
    if (mode === "latency") samples.push([p.i, now - p.t]);
    else if (mode === "delayed") samples.push([p.i, now - p.due]);
    else if (mode === "io") await sleep(IO_LATENCY_MS);
    count++;
    if (count >= n && !finished) { finished = true; lastEnd = performance.now(); finish(false); }
  }, { connection: connection(a.url), concurrency: Number(a.concurrency) });
  await w.waitUntilReady();
  await emit("READY");
  const started = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    if (finished) return;
    if ((first !== null && now - first > cap) || (first === null && now - started > cap + 60000)) {
      finished = true; lastEnd = now; finish(true);
    }
  }, 50);
  const capped = await done;
  clearInterval(timer);
  const elapsed = first === null ? 0 : (lastEnd - first) / 1000;
  await emit("RESULT " + JSON.stringify({ count, elapsed_s: elapsed, capped, samples }));
  process.exit(0);
}

async function producer(a) {
  const queue = new Queue(a.queue, { connection: connection(a.url) });
  await queue.waitUntilReady();
  const jobs = JSON.parse(fs.readFileSync(a.file, "utf8"));
  const t0 = performance.now();
  if (a.cmd === "fill" || (a.cmd === "enqueue" && a.bulk)) {
    for (let s = 0; s < jobs.length; s += BULK_CHUNK) {
      await queue.addBulk(jobs.slice(s, s + BULK_CHUNK).map((d) => ({ name: "noop", data: d })));
    }
  } else if (a.cmd === "enqueue") {
    for (const d of jobs) await queue.add("noop", d);
  } else if (a.cmd === "produce") {
    const rate = Number(a.rate);
    for (let i = 0; i < jobs.length; i++) {
      const wait = t0 + (i * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
      jobs[i].t = wallNow();
      await queue.add("noop", jobs[i]);
    }
  } else if (a.cmd === "delayed") {
    for (const d of jobs) {
      d.due = wallNow() + d.delay;
      await queue.add("noop", d, { delay: Math.round(d.delay * 1000) });
    }
  } else {
    throw new Error("unknown command " + a.cmd);
  }
  const elapsed = (performance.now() - t0) / 1000;
  await queue.close();
  await emit("RESULT " + JSON.stringify({ elapsed_s: elapsed, count: jobs.length }));
  process.exit(0);
}

const args = parseArgs(process.argv.slice(2));
(args.cmd === "worker" ? worker(args) : producer(args)).catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
