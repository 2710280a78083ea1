// Package bench measures the tunnel path on loopback, side by side with the
// physical limit (direct TCP and TLS 1.3) and a peer (rancher/remotedialer),
// in one run on one machine. `make bench` runs TestReport, which prints one
// table and writes it under results/ as JSON and Markdown; the Benchmark
// functions measure the same paths for benchstat. It is a module of its own
// so that the peers' dependencies stay out of the main go.mod.
package bench
