// Run the original @vladmandic/face-api on fixed RGB inputs and save reference outputs as one JSON.
//
// Usage: node reference.js INPUT_DIR OUT_JSON [--backend cpu|wasm] [--detectors-only]
//   INPUT_DIR: written by make_inputs.py (inputs.json + <name>.rgb raw uint8 HWC RGB)
//   OUT_JSON:  e.g. ../../tests/golden/faceapi_reference.json
// The JSON is written twice: first with the detector fields (ssd, tiny), then with every per-face field.
'use strict';

const fs = require('fs');
const path = require('path');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const { tf } = faceapi;

const SSD_OPTIONS = { minConfidence: 0.3, maxResults: 100 };
const TINY_OPTIONS = { inputSize: 416, scoreThreshold: 0.3 };

const r7 = (x) => Number(Number(x).toPrecision(7));

function parseArgs(argv) {
  const args = { backend: 'cpu', detectorsOnly: false, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--backend') args.backend = argv[++i];
    else if (argv[i] === '--detectors-only') args.detectorsOnly = true;
    else args.positional.push(argv[i]);
  }
  if (args.positional.length !== 2) {
    throw new Error('usage: node reference.js INPUT_DIR OUT_JSON [--backend cpu|wasm] [--detectors-only]');
  }
  if (!['cpu', 'wasm'].includes(args.backend)) throw new Error(`--backend: cpu or wasm, got ${args.backend}`);
  [args.inputDir, args.outJson] = args.positional;
  return args;
}

function loadInput(inputDir, entry) {
  const buf = fs.readFileSync(path.join(inputDir, entry.file));
  const [h, w, c] = entry.shape;
  if (buf.length !== h * w * c || c !== 3) {
    throw new Error(`${entry.file}: ${buf.length} bytes, expected ${h}x${w}x3`);
  }
  return tf.tensor3d(Int32Array.from(buf), [h, w, 3], 'int32');
}

function boxOf(det) {
  const b = det.box;
  return [r7(b.x), r7(b.y), r7(b.x + b.width), r7(b.y + b.height)];
}

function writeJson(file, obj) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(tmp, `${JSON.stringify(obj)}\n`);
  fs.renameSync(tmp, file);
}

async function loadNets(modelDir) {
  const { nets } = faceapi;
  await nets.ssdMobilenetv1.loadFromDisk(modelDir);
  await nets.tinyFaceDetector.loadFromDisk(modelDir);
  await nets.faceRecognitionNet.loadFromDisk(modelDir);
  await nets.ageGenderNet.loadFromDisk(modelDir);
  await nets.faceExpressionNet.loadFromDisk(modelDir);
  await nets.faceLandmark68Net.loadFromDisk(modelDir);
}

async function perFace(image, det) {
  // The crop face-api's pipeline uses for a tensor input: extractFaceTensors(image, [detection]),
  // i.e. detection.forSize(W,H).box.clipAtImageBorders(W,H) (floored x, y, width, height).
  const [H, W] = image.shape;
  const crop = det.forSize(W, H).box.clipAtImageBorders(W, H);
  const cropBox = [crop.x, crop.y, crop.width, crop.height];
  const faces = await faceapi.extractFaceTensors(image, [det]);
  if (faces.length !== 1) return { crop_box: cropBox, empty_crop: true };
  const face = faces[0];
  const descriptor = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(face);
  const ag = await faceapi.nets.ageGenderNet.predictAgeAndGender(face);
  const ex = await faceapi.nets.faceExpressionNet.predictExpressions(face);
  const lm = await faceapi.nets.faceLandmark68Net.detectLandmarks(face);
  // as extendWithFaceLandmarks: landmarks relative to the crop, shifted by the detection box's x, y
  const shifted = lm.shiftBy(det.box.x, det.box.y);
  face.dispose();
  return {
    crop_box: cropBox,
    descriptor: Array.from(descriptor, r7),
    age: r7(ag.age),
    gender: ag.gender,
    genderProbability: r7(ag.genderProbability),
    expressions: faceapi.FACE_EXPRESSION_LABELS.map((k) => r7(ex[k])),
    landmarks: shifted.positions.map((p) => [r7(p.x), r7(p.y)]),
    landmarks_crop: lm.positions.map((p) => [r7(p.x), r7(p.y)]),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const meta = JSON.parse(fs.readFileSync(path.join(args.inputDir, 'inputs.json'), 'utf8'));
  await tf.setBackend(args.backend);
  await tf.ready();
  await loadNets(meta.model_dir);

  const out = {
    generator: 'tools/faceapi_reference/reference.js',
    face_api: faceapi.version,
    tfjs: tf.version_core,
    backend: tf.getBackend(),
    decoder: meta.decoder,
    ssd_options: SSD_OPTIONS,
    tiny_options: TINY_OPTIONS,
    expression_labels: faceapi.FACE_EXPRESSION_LABELS,
    box_format: 'x1,y1,x2,y2 input pixels',
    crop_box_format: 'x,y,w,h integer pixels: detection.box.clipAtImageBorders(W,H) as in extractFaceTensors',
    landmarks_format: '68 [x,y] image pixels = crop-relative landmarks shifted by detection box x,y (extendWithFaceLandmarks)',
    complete: false,
    photos: {},
  };
  const images = {};
  const ssdDets = {};
  for (const entry of meta.photos) {
    const image = loadInput(args.inputDir, entry);
    images[entry.name] = image;
    const ssd = await faceapi.nets.ssdMobilenetv1.locateFaces(image, new faceapi.SsdMobilenetv1Options(SSD_OPTIONS));
    const tiny = await faceapi.nets.tinyFaceDetector.locateFaces(image, new faceapi.TinyFaceDetectorOptions(TINY_OPTIONS));
    ssdDets[entry.name] = ssd;
    out.photos[entry.name] = {
      shape: entry.shape,
      sha256: entry.sha256,
      ssd: ssd.map((d) => ({ box: boxOf(d), score: r7(d.score) })),
      tiny: tiny.map((d) => ({ box: boxOf(d), score: r7(d.score) })),
      tiny_input_size: TINY_OPTIONS.inputSize,
    };
    console.log(`${entry.name}: ssd ${ssd.length} faces, tiny ${tiny.length} faces`);
  }
  writeJson(args.outJson, out);
  console.log(`wrote detector part to ${args.outJson}`);
  if (args.detectorsOnly) return;

  for (const entry of meta.photos) {
    const image = images[entry.name];
    const faces = [];
    for (const det of ssdDets[entry.name]) faces.push(await perFace(image, det));
    out.photos[entry.name].faces = faces;
    image.dispose();
  }
  out.complete = true;
  writeJson(args.outJson, out);
  console.log(`wrote complete reference to ${args.outJson}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
