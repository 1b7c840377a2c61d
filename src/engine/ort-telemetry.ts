// onnxruntime's usage telemetry off by default. Its Linux build carries Microsoft's 1DS uploader
// (core/platform/posix/telemetry.cc, PosixTelemetry::Initialize): with it on, every process that creates
// an ORT environment writes $TMPDIR/mat-debug-<pid>.log and $TMPDIR/.ses, keeps a device id and an event
// queue under ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ and uploads events to
// mobile.events.data.microsoft.com. ORT reads ORT_DISABLE_TELEMETRY (1/true/yes/on/y,
// IsTelemetryDisabledByEnvironment in core/platform/telemetry_environment.h) once, when the first
// environment is created (the first session), and latches the answer for the process; so it is set here,
// before onnxruntime-node is loaded. A user who set the variable (e.g. ORT_DISABLE_TELEMETRY=0 to opt in)
// is obeyed. Ranks inherit the variable from whichever process set it.
if (!process.env.ORT_DISABLE_TELEMETRY) process.env.ORT_DISABLE_TELEMETRY = '1';
export {};
