// Runs a TFLite Lab cell's batch-1 model in LiteRT.js, one sample at a time, from ./manifest.json.
// Shared by the browser target (driven by Playwright) and the standalone bundle (index.html).
import {loadLiteRt, loadAndCompile, supportsFeature, Tensor} from '@litertjs/core';

const TYPED = {float32: Float32Array, int32: Int32Array, uint8: Uint8Array};

function typed(dtype, bytes) {
  const T = TYPED[dtype];
  if (!T) throw new Error(`LiteRT.js takes float32/int32/uint8 tensors only, not ${dtype}`);
  const copy = bytes.slice();           // aligned copy
  return new T(copy.buffer, 0, copy.byteLength / T.BYTES_PER_ELEMENT);
}

async function fetchJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`fetching ${url} gave HTTP ${r.status}`);
  return r.json();
}

let loading = null;                     // LiteRT.js's wasm is loaded once per page
const numel = (shape) => shape.reduce((a, b) => a * b, 1);

export function fromBase64(b64) {
  const s = atob(b64), u8 = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u8[i] = s.charCodeAt(i);
  return u8;
}

export function typedFromBase64(dtype, b64) {
  return typed(dtype, fromBase64(b64));
}

function toBase64(arr) {
  const u8 = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

function percentile(sorted, q) {        // numpy's default (linear interpolation)
  const pos = (sorted.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// Tensors by name, never by position: every manifest name must be one of LiteRT.js's own.
// LiteRT.js names a signature's tensors by their signature keys, a model without one by tensor
// names: t.js is the name LiteRT.js uses for t.
function checkDetails(kind, mine, theirs) {
  const byName = new Map(theirs.map((d) => [d.name, d]));
  for (const t of mine) {
    const d = byName.get(t.key) ?? byName.get(t.name);
    if (!d) throw new Error(`LiteRT.js names the ${kind}s ${[...byName.keys()].join(', ')}; ${t.key} (${t.name}) is not among them`);
    t.js = d.name;
    if (d.dtype !== t.dtype) throw new Error(`${kind} ${t.name}: LiteRT.js says ${d.dtype}, the model ${t.dtype}`);
    const shape = Array.from(d.shape);
    if (shape.join(',') !== t.shape.join(',')) throw new Error(`${kind} ${t.name}: LiteRT.js shape [${shape}] is not [${t.shape}]`);
  }
  if (theirs.length !== mine.length) throw new Error(`LiteRT.js has ${theirs.length} ${kind}s, the model ${mine.length}`);
}

// base: URL of the folder holding manifest.json, model.tflite, wasm/, samples and expected outputs.
// Returns the outputs as {name: Float32Array|...} (all samples, concatenated) plus the figures.
export async function runCell(base = './', {accelerator = 'wasm', onProgress = () => {}} = {}) {
  const url = (p) => new URL(p, new URL(base, location.href)).href;
  const man = await fetchJson(url('manifest.json'));
  const relaxedSimd = await supportsFeature('relaxedSimd');
  const t0 = performance.now();
  loading ??= loadLiteRt(new URL('./wasm/', import.meta.url).href).catch((e) => { loading = null; throw e; });
  await loading;                        // a failed load is retried by the next run   // picks litert_wasm_internal (relaxed SIMD) or _compat_
  const loadMs = performance.now() - t0;
  const model = await loadAndCompile(url(man.model), {accelerator});
  const compileMs = performance.now() - t0 - loadMs;
  const toDelete = [];
  try {
    const runner = man.signature_key && model.signatures[man.signature_key] ? model.signatures[man.signature_key] : model;
    const inDetails = Array.from(runner.getInputDetails()), outDetails = Array.from(runner.getOutputDetails());
    checkDetails('input', man.inputs, inDetails);
    checkDetails('output', man.outputs, outDetails);
    const n = man.invocations;
    const inputs = {};
    const blobs = (await fetchJson(url(man.inputs_file))).inputs;
    for (const t of man.inputs) inputs[t.name] = typed(t.dtype, fromBase64(blobs[t.name]));
    const outputs = {};
    for (const t of man.outputs) outputs[t.name] = new TYPED[t.dtype](n * numel(t.shape));
    const feed = (i) => {
      const rec = {};
      for (const t of man.inputs) {
        const k = numel(t.shape);
        rec[t.js] = new Tensor(inputs[t.name].slice(i * k, (i + 1) * k), t.shape);
      }
      return rec;
    };
    const runOne = async (i, keep) => {
      const rec = feed(i);
      let out;
      try {
        out = await runner.run(rec);
        for (const t of man.outputs) {
          const a = out[t.js].toTypedArray();
          if (keep) outputs[t.name].set(a, i * numel(t.shape));
        }
      } finally {
        for (const x of Object.values(rec)) x.delete();
        if (out) for (const x of Object.values(out)) x.delete();
      }
    };
    for (let i = 0; i < n; i++) {
      await runOne(i, true);
      onProgress(i + 1, n);
    }
    // Timed like the server's LiteRT: warm batch-1 runs, inputs copied in and outputs copied out.
    // Pages without cross-origin isolation get a coarse clock (0.1 ms in Chromium, 1 ms in Safari/
    // Firefox): a run shorter than ~2 ms is timed as a group of `reps` runs, divided.
    const warmup = man.warmup ?? 3, runs = man.runs ?? 30, budget = man.budget_ms ?? 3000;
    for (let i = 0; i < warmup; i++) await runOne(0, false);
    let reps = 1;
    for (;;) {
      const a = performance.now();
      for (let k = 0; k < reps; k++) await runOne(0, false);
      const el = performance.now() - a;
      if (el >= 2 || reps >= 1024) break;
      reps *= 4;
    }
    const times = [], start = performance.now();
    for (let i = 0; i < runs; i++) {
      const a = performance.now();
      for (let k = 0; k < reps; k++) await runOne(0, false);
      times.push((performance.now() - a) / reps);
      if (i >= 4 && performance.now() - start > budget) break;
    }
    const sorted = [...times].sort((a, b) => a - b);
    return {
      outputs,
      figures: {
        latency_ms: {median: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), runs: times.length, warmup,
                     runs_per_timing: reps, samples_ms: times},
        load_ms: loadMs, compile_ms: compileMs,
        accelerator, wasm_build: relaxedSimd ? 'litert_wasm_internal' : 'litert_wasm_compat_internal',
        user_agent: navigator.userAgent, platform: navigator.platform,
        hardware_concurrency: navigator.hardwareConcurrency,
        input_details: inDetails.map((d) => ({name: d.name, index: d.index, dtype: d.dtype, shape: Array.from(d.shape)})),
        output_details: outDetails.map((d) => ({name: d.name, index: d.index, dtype: d.dtype, shape: Array.from(d.shape)})),
      },
    };
  } finally {
    for (const x of toDelete) x.delete();
    model.delete();
  }
}

function describe(e) {
  if (typeof Event !== 'undefined' && e instanceof Event) {   // a <script> that did not load
    const src = e.target && (e.target.src || e.target.href);
    return `could not load ${src || 'a script'} (${e.type})`;
  }
  return String(e && e.message || e);
}

// What the browser target reads back through Playwright: raw bytes as base64, per output.
export async function runForServer(base, opts) {
  try {
    const r = await runCell(base, opts);
    const outputs = {};
    for (const [k, v] of Object.entries(r.outputs)) outputs[k] = toBase64(v);
    return {ok: true, outputs, figures: r.figures};
  } catch (e) {
    return {ok: false, error: describe(e)};
  }
}
