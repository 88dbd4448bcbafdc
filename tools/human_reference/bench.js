// Time the original Human-library graph models (Human's preprocessing + model.execute + output read) per image.
//
// Usage: node bench.js MODEL_DIR [--backend wasm|cpu] [--threads N] [--batches 1,8] [--repeats 3]
//        [--height 480 --width 640] [--crop-height 160 --crop-width 130] [--nets blazeface-back,...]
// Prints one JSON object like tools/faceapi_reference/bench.js: {backend, threads, tfjs, ms_per_image:{net:{batch:ms}},
// cpu_ms_per_image:{...}}. Detectors (blazeface-back, centernet) get random 0..255 images of height x width, the
// face nets random 0..1 crops of crop-height x crop-width. A batch of b is b calls in a row, as Human runs its
// nets once per face (and its detectors once per frame). Wall clock: the minimum over repeats after one warm-up;
// cpu: the process CPU time (user+sys, all threads) of that fastest run.
'use strict';

const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');
const { setThreadsCount, getThreadsCount } = require('@tensorflow/tfjs-backend-wasm');
const { loadModel, blazeface, centernet, FACE_NETS } = require('./reference.js');

const NETS = {
  'blazeface-back': { run: blazeface, detector: true },
  'blazeface-front': { run: blazeface, detector: true },
  centernet: { run: centernet, detector: true },
  ...Object.fromEntries(Object.entries(FACE_NETS).map(([k, run]) => [k, { run, detector: false }])),
};

function parseArgs(argv) {
  const args = {
    backend: 'wasm', threads: 0, batches: [1, 8], repeats: 3, height: 480, width: 640, cropHeight: 160, cropWidth: 130, nets: Object.keys(NETS),
  };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--backend') args.backend = argv[++i];
    else if (a === '--threads') args.threads = Number(argv[++i]);
    else if (a === '--batches') args.batches = argv[++i].split(',').map(Number);
    else if (a === '--repeats') args.repeats = Number(argv[++i]);
    else if (a === '--height') args.height = Number(argv[++i]);
    else if (a === '--width') args.width = Number(argv[++i]);
    else if (a === '--crop-height') args.cropHeight = Number(argv[++i]);
    else if (a === '--crop-width') args.cropWidth = Number(argv[++i]);
    else if (a === '--nets') args.nets = argv[++i].split(',');
    else pos.push(a);
  }
  if (pos.length !== 1) throw new Error('usage: node bench.js MODEL_DIR [--backend wasm|cpu] ...');
  for (const n of args.nets) if (!NETS[n]) throw new Error(`--nets: unknown net ${n}; choose from ${Object.keys(NETS)}`);
  [args.modelDir] = pos;
  return args;
}

async function timeOnce(spec, model, inputs) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (const x of inputs) await spec.run(model, x); // each call reads its outputs back (data()/array())
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(c0);
  return { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.backend === 'wasm' && args.threads > 0) setThreadsCount(args.threads);
  await tf.setBackend(args.backend);
  await tf.ready();
  const result = {
    backend: tf.getBackend(),
    threads: args.backend === 'wasm' ? getThreadsCount() : 1,
    threads_asked: args.threads,
    image: [args.height, args.width],
    crop: [args.cropHeight, args.cropWidth],
    tfjs: tf.version_core,
    ms_per_image: {},
    cpu_ms_per_image: {},
  };
  for (const name of args.nets) {
    const spec = NETS[name];
    const { model } = await loadModel(args.modelDir, name);
    result.ms_per_image[name] = {};
    result.cpu_ms_per_image[name] = {};
    for (const b of args.batches) {
      const inputs = Array.from({ length: b }, () => (spec.detector
        ? tf.randomUniform([1, args.height, args.width, 3], 0, 255, 'float32')
        : tf.randomUniform([1, args.cropHeight, args.cropWidth, 3], 0, 1, 'float32')));
      await timeOnce(spec, model, inputs); // warm-up
      let best = { ms: Infinity, cpuMs: Infinity };
      for (let r = 0; r < args.repeats; r++) {
        const t = await timeOnce(spec, model, inputs);
        if (t.ms < best.ms) best = t;
      }
      result.ms_per_image[name][b] = best.ms / b;
      result.cpu_ms_per_image[name][b] = best.cpuMs / b;
      inputs.forEach((t) => t.dispose());
    }
    model.dispose();
  }
  console.log(JSON.stringify(result));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
