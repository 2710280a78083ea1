package charts

import (
	"flag"
	"io"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/clusterconnect/clusterconnect/relay"
)

// TestRelayChartArgsParse: the relay container's args parse with the
// relay's own flags and pass its Validate (a flag the relay lacks fails here,
// not in a pod), on the embedded store and on etcd.
func TestRelayChartArgsParse(t *testing.T) {
	for name, docs := range map[string][]string{
		"defaults": nil,
		"etcd":     {relayProduction, `replicas: 3`},
		"entra":    {`entra: {tenants: [t1], audiences: ["api://cc"]}`},
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := relayRender(t, relayValues(t, docs...))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range byKind(objs, "Deployment") {
				d := convert[appsv1.Deployment](t, o)
				c := d.Spec.Template.Spec.Containers[0]
				opts := relay.NewOptions()
				fs := flag.NewFlagSet("relay", flag.ContinueOnError)
				fs.SetOutput(io.Discard)
				opts.Flags(fs)
				if err := fs.Parse(c.Args); err != nil {
					t.Fatalf("%v (args %v)", err, c.Args)
				}
				if fs.NArg() != 0 {
					t.Errorf("stray arguments %v", fs.Args())
				}
				if err := opts.Validate(); err != nil {
					t.Errorf("%v (args %v)", err, c.Args)
				}
				if name == "etcd" && (opts.Store != "etcd" || len(opts.Etcd.Endpoints) == 0 || opts.Etcd.CertFile == "") {
					t.Errorf("etcd store not selected: %+v", opts.Etcd)
				}
			}
		})
	}
}
