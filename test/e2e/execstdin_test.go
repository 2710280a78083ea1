package e2e

import (
	"bytes"
	"testing"

	"github.com/clusterconnect/clusterconnect/test/harness"
	"github.com/clusterconnect/clusterconnect/test/wsexec"
)

// TestExecLargeStdinMessage writes 200 000 bytes of stdin to `cat` as ONE
// WebSocket message and leaves stdin open (kubectl sends smaller messages
// and closes stdin): every byte must come back through relay → tunnel →
// agent → apiserver → kubelet, every time.
func TestExecLargeStdinMessage(t *testing.T) {
	ctx := harness.TestContext(t)
	tg := viaRelay(t, ctx)
	tc, err := shared.relay.DataTLSConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 12500)
	for try := range 10 {
		s, err := wsexec.Dial(ctx, wsexec.Options{
			Server: shared.relay.URL + "/clusters/e2e", Token: shared.saToken, TLS: tc,
			Namespace: tg.Namespace, Pod: tg.Pod, Container: tg.Container, Command: []string{"cat"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteStdin(ctx, data); err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadStdout(ctx, len(data))
		s.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("try %d: %d of %d bytes came back (%v)", try, len(got), len(data), err)
		}
	}
}
