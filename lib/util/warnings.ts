// Warnings: a call that runs but whose result is likely not what the caller
// wanted. They go to the caller's onWarning when given, else to Node's
// process warnings (printed once per code on stderr, `--no-warnings` hides them).

export type NgateWarningCode =
  /** buildGate: a layer with no strongly active neuron, so the gate blocks all its subject-position gradient. */
  | 'NGATE_EMPTY_GATE_LAYER'
  /** learnMask: a masked layer is the model's last, where a mask cannot reach the answer's logits. */
  | 'NGATE_LAST_LAYER_MASK';

export interface NgateWarning { code: NgateWarningCode; message: string }

export type WarningCallback = (warning: NgateWarning) => void;

export function warn(onWarning: WarningCallback | undefined, code: NgateWarningCode, message: string): void {
  if (onWarning) onWarning({ code, message });
  else process.emitWarning(message, { type: 'NgateWarning', code });
}
