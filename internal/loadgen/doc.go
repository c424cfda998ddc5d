// Package loadgen is the load generator behind `flashgrab load`: it sets up a
// scenario on a running flashgrab server through its HTTP API (a sale to win,
// a sold-out sale, red packets, or a mix of the three), then sends grabs for a
// fixed duration and reports throughput, latency percentiles and the count of
// every kind of answer.
//
// Run drives one run from a Config and returns a Report, which writes itself
// as a table, as JSON or as a latency plot. A run is either a closed loop
// (Config.Rate 0: each worker sends its next request when the previous one is
// answered, which finds the maximum throughput) or an open loop (Config.Rate >
// 0: requests at fixed intervals whether or not earlier ones were answered,
// with latency counted from the scheduled time, so that a server that falls
// behind is not flattered by the generator waiting for it).
//
// The generator mints its own admin and user tokens from the server's JWT
// secret and names everything it creates after a random run id, so that runs
// against one server do not collide. The hot loop reuses its requests and
// buffers and allocates nothing per request (BenchmarkWorkerRequest).
package loadgen
