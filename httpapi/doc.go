// Package httpapi serves an OpenVerify engine over HTTP: the wire formats
// of Kaleyra Verify (/v1/{sid}/verify), WAYSCloud Verify (/v1/verify/...)
// and ThunderSMS Verify (/api/v2/verify/...), an admin API under /admin/
// with the operators' console under /admin/console/, and delivery-report
// webhooks for Twilio and Kaleyra under /hooks/.
//
// Each is an http.Handler built from an *verify.Engine and options, to
// mount in the host's own mux behind its own middleware:
//
//	kaleyra := httpapi.Kaleyra(eng, httpapi.WithAPIKeys(key))
//	mux.Handle("/v1/{sid}/verify", kaleyra)
//	mux.Handle("/v1/{sid}/verify/validate", kaleyra)
//	ways := httpapi.WAYSCloud(eng, httpapi.WithAuthorizer(checkSession))
//	mux.Handle("/v1/verify/send", ways)
//	mux.Handle("/v1/verify/check", ways)
//	mux.Handle("/api/v2/verify/", httpapi.ThunderSMS(eng, httpapi.WithAPIKeys(key)))
//	mux.Handle("/admin/", httpapi.Admin(eng, httpapi.WithAdminKeys(adminKey)))
//	mux.Handle("/hooks/", httpapi.Hooks(eng, httpapi.WithTwilioHook(hook)))
//
// A handler serves its vendor's full paths, so it is mounted at them (the
// Kaleyra and WAYSCloud paths share /v1/, so they are mounted path by
// path) or under http.StripPrefix. New returns one handler for all of
// them; it is what cmd/openverify serves. The package keeps no global
// state and starts no goroutines: the host runs the engine (eng.Run)
// itself.
//
// Nothing is served open. A verify API answers 401 (E924) unless the
// request carries one of the WithAPIKeys keys in its vendor's scheme
// (Kaleyra's api-key header, WAYSCloud's X-API-Key, ThunderSMS's
// Authorization: Bearer), compared in constant time, or passes the host's
// Authorizer (WithAuthorizer); with neither configured, every request is
// refused. The admin routes likewise with WithAdminKeys or
// WithAdminAuthorizer; their state-changing requests are also refused when
// a browser makes them cross-site, and need a JSON body.
//
// The WAYSCloud and ThunderSMS APIs name channels, not flows: their sends
// run as ad-hoc flows (verify.SendRequest.Flow), which never add to the
// catalog, with the identities verify.AdHocFlowID("wayscloud") and
// verify.AdHocFlowID("thundersms") for rate limits, duplicate detection and
// reports. A ThunderSMS request's own message text and sender IDs are
// refused unless an InlinePolicy allows them.
//
// Errors answer in Kaleyra's JSON error envelope (WAYSCloud's with a
// "status" beside it), with the status (*verify.Error).HTTPStatus
// suggests: 503 with Retry-After when the store is unavailable for a
// moment (E926), 500 with a reference to the log line for an internal
// failure (E925), and 404 and 405 for paths and methods a handler does
// not serve. Fields a vendor's API does not define are ignored, as the
// vendors' APIs do; the admin API, OpenVerify's own, refuses them. The
// providers' delivery-report hooks (Hooks) are answered for the providers,
// which read only the status: 204 once the report is taken, 403 for a bad
// signature, 400 in plain text for a report they cannot read.
package httpapi
