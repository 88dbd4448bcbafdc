// Time the original face-api nets (forward pass incl. face-api's own preprocessing) per image.
//
// Usage: node bench.js MODEL_DIR [--backend wasm|cpu] [--threads N] [--batches 1,8] [--repeats 3]
//        [--height 480 --width 640] [--crop-height 160 --crop-width 130]
//        [--nets ssd_mobilenetv1,tiny_face_detector,face_recognition,age_gender,expression,landmarks68]
// Prints one JSON object: {backend, threads, image:[h,w], crop:[h,w], ms_per_image:{net:{batch:ms}},
// cpu_ms_per_image:{net:{batch:ms}}}. Detectors get random uint8 images of height x width, the
// face-analysis nets random face crops of crop-height x crop-width (a batch is an array of crops, as
// face-api's pipeline passes them). Wall clock: the minimum over repeats after one warm-up call;
// cpu: the process CPU time (user+sys, all threads) of that same fastest call.
'use strict';

const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const { tf } = faceapi;

const NETS = {
  ssd_mobilenetv1: { net: () => faceapi.nets.ssdMobilenetv1, run: (net, input) => net.forward(input) },
  tiny_face_detector: { net: () => faceapi.nets.tinyFaceDetector, run: (net, input) => net.forward(input, 416) },
  face_recognition: { net: () => faceapi.nets.faceRecognitionNet, run: (net, input) => net.forward(input), crop: true },
  age_gender: { net: () => faceapi.nets.ageGenderNet, run: (net, input) => net.forward(input), crop: true },
  expression: { net: () => faceapi.nets.faceExpressionNet, run: (net, input) => net.forward(input), crop: true },
  landmarks68: { net: () => faceapi.nets.faceLandmark68Net, run: (net, input) => net.forward(input), crop: true },
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

function flatten(out) {
  if (out instanceof tf.Tensor) return [out];
  if (Array.isArray(out)) return out.flatMap(flatten);
  if (out && typeof out === 'object') return Object.values(out).flatMap(flatten);
  return [];
}

async function timeOnce(spec, net, images) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const out = await spec.run(net, images);
  const tensors = flatten(out);
  for (const t of tensors) await t.data(); // force completion
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(c0);
  tensors.forEach((t) => t.dispose());
  return { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
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
    crop: [args.cropHeight, args.cropWidth],
    face_api: faceapi.version,
    tfjs: tf.version_core,
    ms_per_image: {},
    cpu_ms_per_image: {},
  };
  for (const name of args.nets) {
    const spec = NETS[name];
    const net = spec.net();
    if (!net.isLoaded) await net.loadFromDisk(args.modelDir);
    result.ms_per_image[name] = {};
    result.cpu_ms_per_image[name] = {};
    const [h, w] = spec.crop ? [args.cropHeight, args.cropWidth] : [args.height, args.width];
    for (const b of args.batches) {
      const images = Array.from({ length: b }, () => tf.randomUniform([h, w, 3], 0, 256, 'int32'));
      await timeOnce(spec, net, b === 1 ? images[0] : images); // warm-up
      let best = { ms: Infinity, cpuMs: Infinity };
      for (let r = 0; r < args.repeats; r++) {
        const t = await timeOnce(spec, net, b === 1 ? images[0] : images);
        if (t.ms < best.ms) best = t;
      }
      result.ms_per_image[name][b] = best.ms / b;
      result.cpu_ms_per_image[name][b] = best.cpuMs / b;
      images.forEach((t) => t.dispose());
    }
  }
  console.log(JSON.stringify(result));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
