/**
 * ONNX Runtime's telemetry, off unless the user asks for it. The official Linux and macOS builds of
 * ONNX Runtime (1.2x) start a telemetry uploader when their environment is created: it writes a
 * device-ID database under ~/.cache/Microsoft/DeveloperTools/.onnxruntime (and prints a warning where
 * HOME cannot be written). ORT_DISABLE_TELEMETRY=1 in the process environment before that moment
 * keeps it from starting; the C API's DisableTelemetryEvents cannot, as it takes the environment it
 * would stop. So this module sets the variable unless the user set it (ORT_DISABLE_TELEMETRY=0 keeps
 * ONNX Runtime's default), and is imported before onnxruntime-node (session.ts) and wherever workers
 * are started (worker.ts: a worker thread's process.env is its own copy, while the main thread's
 * reaches the native environment every thread shares).
 */
process.env["ORT_DISABLE_TELEMETRY"] ??= "1";

/** Whether ONNX Runtime's telemetry is off in this process. */
export const ortTelemetryDisabled = (): boolean => process.env["ORT_DISABLE_TELEMETRY"] !== "0";
