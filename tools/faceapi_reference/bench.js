// Time the original face-api nets (forward pass incl. face-api's own preprocessing) per image.
//
// Usage: node bench.js MODEL_DIR [--backend wasm|cpu] [--threads N] [--batches 1,8] [--repeats 3]
//        [--height 480 --width 640] [--nets ssd_mobilenetv1,tiny_face_detector]
// Prints one JSON object: {backend, threads, image:[h,w], ms_per_image:{net:{batch:ms}}}.
// Random uint8 images; the minimum over repeats (after one warm-up call) is reported.
'use strict';

const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const { tf } = faceapi;

const NETS = {
  ssd_mobilenetv1: { net: () => faceapi.nets.ssdMobilenetv1, run: (net, input) => net.forward(input) },
  tiny_face_detector: { net: () => faceapi.nets.tinyFaceDetector, run: (net, input) => net.forward(input, 416) },
};

function parseArgs(argv) {
  const args = { backend: 'wasm', threads: 0, batches: [1, 8], repeats: 3, height: 480, width: 640, nets: Object.keys(NETS) };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--backend') args.backend = argv[++i];
    else if (a === '--threads') args.threads = Number(argv[++i]);
    else if (a === '--batches') args.batches = argv[++i].split(',').map(Number);
    else if (a === '--repeats') args.repeats = Number(argv[++i]);
    else if (a === '--height') args.height = Number(argv[++i]);
    else if (a === '--width') args.width = Number(argv[++i]);
    else if (a === '--nets') args.nets = argv[++i].split(',');
    else pos.push(a);
  }
  if (pos.length !== 1) throw new Error('usage: node bench.js MODEL_DIR [--backend wasm|cpu] ...');
  for (const n of args.nets) if (!NETS[n]) throw new Error(`--nets: unknown net ${n}; choose from ${Object.keys(NETS)}`);
  [args.modelDir] = pos;
  return args;
}

function flatten(out) {
  if (out instanceof tf.Tensor) return [out];
  if (Array.isArray(out)) return out.flatMap(flatten);
  if (out && typeof out === 'object') return Object.values(out).flatMap(flatten);
  return [];
}

async function timeOnce(spec, net, images) {
  const t0 = process.hrtime.bigint();
  const out = await spec.run(net, images);
  const tensors = flatten(out);
  for (const t of tensors) await t.data(); // force completion
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  tensors.forEach((t) => t.dispose());
  return ms;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.backend === 'wasm' && args.threads > 0 && tf.setThreadsCount) tf.setThreadsCount(args.threads);
  await tf.setBackend(args.backend);
  await tf.ready();
  const result = {
    backend: tf.getBackend(),
    threads: args.backend === 'wasm' && tf.getThreadsCount ? tf.getThreadsCount() : 1,
    image: [args.height, args.width],
    face_api: faceapi.version,
    tfjs: tf.version_core,
    ms_per_image: {},
  };
  for (const name of args.nets) {
    const spec = NETS[name];
    const net = spec.net();
    if (!net.isLoaded) await net.loadFromDisk(args.modelDir);
    result.ms_per_image[name] = {};
    for (const b of args.batches) {
      const images = Array.from({ length: b }, () => tf.randomUniform([args.height, args.width, 3], 0, 256, 'int32'));
      await timeOnce(spec, net, b === 1 ? images[0] : images); // warm-up
      let best = Infinity;
      for (let r = 0; r < args.repeats; r++) best = Math.min(best, await timeOnce(spec, net, b === 1 ? images[0] : images));
      result.ms_per_image[name][b] = best / b;
      images.forEach((t) => t.dispose());
    }
  }
  console.log(JSON.stringify(result));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
