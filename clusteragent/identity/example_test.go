package identity_test

import (
	"context"
	"log"
	"log/slog"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/clusteragent/identity"
)

// The clusteridentityoperator role: enrol once (or load the stored
// identity), keep it renewed, and hand the certificate to relay connections.
func Example() {
	ctx := context.Background()
	rc, err := rest.InClusterConfig()
	if err != nil {
		log.Fatal(err)
	}
	id, err := identity.New(identity.Config{
		RelayURL:              "https://relay.example:8443",
		Cluster:               "prod-eu",
		RegistrationTokenFile: "/etc/clusterconnect/registration/token",
		Client:                kubernetes.NewForConfigOrDie(rc),
		Namespace:             "clusterconnect",
		Logger:                slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := id.Ensure(ctx); err != nil {
		log.Fatal(err) // e.g. "certificate of cluster prod-eu expired on ...: re-register the cluster: ..."
	}
	go id.Run(ctx)

	// Every new connection presents the current certificate.
	tlsConfig := id.TLSConfig()
	_ = tlsConfig // e.g. tunnel.DialOptions{TLSConfig: tlsConfig}
	resp, err := id.HTTPClient().Get("https://relay.example:8443/agent/v1/...")
	if err == nil {
		resp.Body.Close()
	}
}
