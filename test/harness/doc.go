// Package harness runs the end-to-end suites' processes: it builds the
// commands under cmd/ once per test binary, starts one shared etcd +
// kube-apiserver (test/cluster) and, where asked, the test kubelet
// (test/kubelet), and starts the relay, clusteragents, kube-aad-proxy,
// guard and the Entra-shaped OIDC stand-in (test/oidc) with the flags a
// test run wants: loopback addresses, short keep-alives, debug logs.
//
// A suite's TestMain is one call:
//
//	func TestMain(m *testing.M) { harness.Main(m, "e2e/aad", setup) }
//
// where setup starts what the suite shares through the [Env] it is given.
// Everything the Env starts, in setup or in a test, is stopped when the
// run ends, in reverse order, also when setup or a test failed; a test
// that stops a process earlier stops it with the same (idempotent) Stop.
// The working directory, with every process log, is removed after a
// passing run and kept (its path printed) after a failing one.
//
// Waiting is on signals: a health endpoint answering 200 ([WaitHTTP]), a
// line in a process log ([WaitLog]), the management API counting tunnels
// ([Relay.WaitTunnels]); each wait also ends when the process exits, with
// the tail of its log in the error.
package harness
