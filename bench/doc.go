// Package bench holds the end-to-end benchmarks, run with
// `go test -run '^$' -bench . ./bench/` (`make bench`). Each measures a path
// of the engine against the real Redis and MariaDB next to its baseline, in
// the same run, so that the ratio means something on a noisy machine:
//
//	BenchmarkGrab      the sale grab over HTTP (coalesced), 96 requests in flight;
//	                   baselines: the same with coalescing off (http-per-call),
//	                   the grab script alone through go-redis (raw-script), and a
//	                   fasthttp handler answering a constant (http-constant, the
//	                   floor under the sold-out answer, http-soldout); also
//	                   red-packet grabs (http-packet)
//	BenchmarkGrabSharded  one hot sale over 4 shards against the same sale on
//	                   one (shards-1), and a sold-out sale of 4 shards; on one
//	                   Redis this is the cost of sharding, its gain is measured
//	                   on a cluster by bench/devperf/cluster.sh
//	BenchmarkSettle    settled events/s on MariaDB, batched against one
//	                   compare-and-set per event, on one hot account and on
//	                   10,000; baseline: 32 writers racing with one
//	                   compare-and-set each (hot/per-event-naive)
//
// The figures of the last runs are in the README, section Performance. The
// package has no code of its own outside its tests. The load generator
// behind `flashgrab load`, which measures a running server from outside, is
// package internal/loadgen.
package bench
