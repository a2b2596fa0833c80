// Package httpapi serves an OpenVerify engine over HTTP: the wire formats of
// Kaleyra Verify (/v1/{sid}/verify), WAYSCloud Verify (/v1/verify/...) and
// ThunderSMS Verify (/api/v2/verify/...), an admin API and dashboard under
// /admin/, and delivery-report webhooks for Twilio and Kaleyra under
// /hooks/.
//
// New returns one http.Handler for all of it, built from an *verify.Engine
// and a Config. The package keeps no global state and starts no
// goroutines: a host mounts the handler in its own mux, behind its own
// middleware, and runs the engine (eng.Run) itself. The runnable server,
// cmd/openverify, is New plus flags, environment and providers.
//
// Nothing is served open: the verify APIs answer 401 (E924) unless the
// request carries one of Config.APIKeys in the vendor's own header
// (Kaleyra's api-key, WAYSCloud's X-API-Key, ThunderSMS's Authorization:
// Bearer), and the admin routes unless it carries one of Config.AdminKeys;
// keys are compared in constant time, and with no keys configured every
// request is refused. State-changing admin requests are also refused when a
// browser makes them cross-site, and need a JSON body.
//
// Errors answer in Kaleyra's JSON error envelope (WAYSCloud's check in its
// own shape), with the status (*verify.Error).HTTPStatus suggests: 503 with
// Retry-After when the store is unavailable for a moment (E926), 500 with a
// reference to the log line for an internal failure (E925).
package httpapi
