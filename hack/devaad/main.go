// Command devaad stands in for Microsoft Entra ID in the demo (make demo):
// it runs the local OIDC issuer of test/oidc (discovery, JWKS, token and
// device-code endpoints, Graph-style getMemberObjects) on loopback until
// SIGTERM, approving every device-code login as one demo user, and makes a
// development serving certificate for kube-aad-proxy. When ready it writes
// <dir>/aad.env for the demo script: ISSUER_URL, ISSUER_V1_URL, ISSUER_CA,
// GRAPH_URL, TENANT, PROXY_CERT, PROXY_KEY, PROXY_CA.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/clusterconnect/clusterconnect/relay/certs"
	"github.com/clusterconnect/clusterconnect/test/oidc"
)

func main() {
	dir := flag.String("dir", ".demo/aad", "working directory (CA files, aad.env)")
	addr := flag.String("listen", "127.0.0.1:18446", "issuer listen address")
	tenant := flag.String("tenant", "72f988bf-86f1-41af-91ab-2d7cd011db47", "the demo tenant ID")
	upn := flag.String("user", "dev@contoso.example", "who device-code logins sign in as")
	groups := flag.String("groups", "demo-admins", "comma-separated groups of that user")
	graphClient := flag.String("graph-client", "kube-aad-proxy", "client ID allowed to call Graph (client credentials)")
	graphSecretFile := flag.String("graph-secret-file", "", "file with that client's secret (required)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dir, *addr, *tenant, *upn, *groups, *graphClient, *graphSecretFile, log); err != nil {
		log.Error("devaad failed", "err", err)
		os.Exit(1)
	}
}

// demoOID is the object ID of the user device-code logins sign in as.
const demoOID = "00000000-0000-0000-0000-00000000d3e0"

func run(dir, addr, tenant, upn, groups, graphClient, secretFile string, log *slog.Logger) error {
	if secretFile == "" {
		return fmt.Errorf("--graph-secret-file is required")
	}
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	iss, err := oidc.Start(&oidc.Options{
		Addr:          addr,
		Clients:       map[string]string{graphClient: strings.TrimSpace(string(secret))},
		DeviceVersion: 1,
		AutoApprove:   &oidc.User{Tenant: tenant, UPN: upn, OID: demoOID, Groups: strings.Split(groups, ",")},
		Logger:        log,
	})
	if err != nil {
		return err
	}
	defer iss.Close()
	issuerCA := filepath.Join(dir, "issuer-ca.crt")
	if err := os.WriteFile(issuerCA, iss.CAPEM, 0o600); err != nil {
		return err
	}
	tlsFiles, err := certs.EnsureDev(filepath.Join(dir, "proxy-tls"), []string{"127.0.0.1", "localhost"})
	if err != nil {
		return err
	}
	// guard's serving certificate: the apiserver verifies guard by this CA.
	guardFiles, err := certs.EnsureDev(filepath.Join(dir, "guard-tls"), []string{"127.0.0.1", "localhost"})
	if err != nil {
		return err
	}
	env := fmt.Sprintf("ISSUER_URL=%s\nISSUER_V1_URL=%s\nISSUER_CA=%s\nGRAPH_URL=%s\nTENANT=%s\nPROXY_CERT=%s\nPROXY_KEY=%s\nPROXY_CA=%s\n",
		iss.URL, iss.V1Base(), issuerCA, iss.GraphURL(), tenant, tlsFiles.CertFile, tlsFiles.KeyFile, tlsFiles.CAFile)
	env += fmt.Sprintf("USER_OID=%s\nGUARD_CERT=%s\nGUARD_KEY=%s\nGUARD_CA=%s\n", demoOID, guardFiles.CertFile, guardFiles.KeyFile, guardFiles.CAFile)
	if err := os.WriteFile(filepath.Join(dir, "aad.env"), []byte(env), 0o600); err != nil {
		return err
	}
	log.Info("local Entra stand-in is up", "url", iss.URL, "tenant", tenant, "device_login_user", upn)
	<-ctx.Done()
	return nil
}
