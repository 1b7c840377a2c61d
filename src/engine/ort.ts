// The one place tprun loads onnxruntime-node from, so its telemetry is off before it first runs
// (ort-telemetry.ts, evaluated first: ES modules run their imports in order).
import './ort-telemetry.js';
import ort from 'onnxruntime-node';

export default ort;
