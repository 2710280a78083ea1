package harness

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/clusterconnect/clusterconnect/test/oidc"
)

// Issuer is the Entra-shaped OIDC stand-in (an in-process server on
// 127.0.0.1) with its CA in a file, for the processes that trust it.
type Issuer struct {
	*oidc.Issuer
	// CAFile is the PEM file of the CA of its serving certificate.
	CAFile string
}

// StartIssuer starts the OIDC stand-in; nil opts means oidc's defaults.
func (e *Env) StartIssuer(opts *oidc.Options) (*Issuer, error) {
	dir, err := e.NewDir("issuer")
	if err != nil {
		return nil, err
	}
	iss, err := oidc.Start(opts)
	if err != nil {
		return nil, fmt.Errorf("start OIDC issuer: %w", err)
	}
	e.OnStop(func() { iss.Close() })
	i := &Issuer{Issuer: iss, CAFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(i.CAFile, iss.CAPEM, 0o600); err != nil {
		return nil, err
	}
	return i, nil
}

// VerifierArgs are the token-verifier flags kube-aad-proxy, guard and the
// relay share (pkg/entra.Options).
func (i *Issuer) VerifierArgs(tenant string, audiences []string) []string {
	args := []string{
		"--issuer-url", i.URL, "--v1-issuer-url", i.V1Base(), "--issuer-ca-file", i.CAFile,
		"--tenant", tenant,
		"--jwks-min-refresh-interval", "100ms",
	}
	for _, a := range audiences {
		args = append(args, "--audience", a)
	}
	return args
}
