package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/test/proc"
)

// EtcdOptions configure StartEtcd.
type EtcdOptions struct {
	// Members is the size of the etcd cluster (default 3).
	Members int
	// Dir holds the members' data, logs and certificates. Required.
	Dir string
	// BinDir: see Options.BinDir.
	BinDir string
	Logger *slog.Logger
}

// Etcd is a real etcd cluster on loopback with TLS on every port: members
// verify each other's certificates, clients need a certificate of its CA
// (ClientCert/ClientKey) and trust CAFile.
type Etcd struct {
	// Endpoints are the members' client URLs, https://127.0.0.1:<port>.
	Endpoints []string
	// CAFile signed the members' and the client's certificates.
	CAFile, ClientCert, ClientKey string

	dir     string
	bin     string
	logger  *slog.Logger
	mu      sync.Mutex
	members []*etcdMember
}

type etcdMember struct {
	name                  string
	client, peer, metrics int
	args                  []string
	p                     *proc.Process
}

// StartEtcd starts opts.Members etcd processes forming one cluster and
// waits until every member reports healthy.
func StartEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	if opts.Members == 0 {
		opts.Members = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	bin, err := resolveBinDir(ctx, opts.BinDir, opts.Logger)
	if err != nil {
		return nil, err
	}
	e := &Etcd{dir: opts.Dir, bin: filepath.Join(bin, "etcd"), logger: opts.Logger}
	if err := e.writePKI(); err != nil {
		return nil, err
	}
	ports, err := freePorts(3 * opts.Members)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range opts.Members {
		m := &etcdMember{name: "m" + strconv.Itoa(i), client: ports[3*i], peer: ports[3*i+1], metrics: ports[3*i+2]}
		e.members = append(e.members, m)
		e.Endpoints = append(e.Endpoints, "https://127.0.0.1:"+strconv.Itoa(m.client))
		initial = append(initial, fmt.Sprintf("%s=https://127.0.0.1:%d", m.name, m.peer))
	}
	tlsArgs := []string{
		"--cert-file=" + filepath.Join(e.dir, "member.crt"), "--key-file=" + filepath.Join(e.dir, "member.key"),
		"--client-cert-auth", "--trusted-ca-file=" + e.CAFile,
		"--peer-cert-file=" + filepath.Join(e.dir, "member.crt"), "--peer-key-file=" + filepath.Join(e.dir, "member.key"),
		"--peer-client-cert-auth", "--peer-trusted-ca-file=" + e.CAFile,
	}
	for _, m := range e.members {
		m.args = append([]string{
			"--name=" + m.name,
			"--data-dir=" + filepath.Join(e.dir, m.name),
			fmt.Sprintf("--listen-client-urls=https://127.0.0.1:%d", m.client),
			fmt.Sprintf("--advertise-client-urls=https://127.0.0.1:%d", m.client),
			fmt.Sprintf("--listen-peer-urls=https://127.0.0.1:%d", m.peer),
			fmt.Sprintf("--initial-advertise-peer-urls=https://127.0.0.1:%d", m.peer),
			fmt.Sprintf("--listen-metrics-urls=http://127.0.0.1:%d", m.metrics),
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=new",
			"--initial-cluster-token=clusterconnect-test",
			"--unsafe-no-fsync",
			"--heartbeat-interval=50", "--election-timeout=500",
			"--log-level=warn",
		}, tlsArgs...)
	}
	for i := range e.members {
		if err := e.start(i); err != nil {
			e.Stop()
			return nil, err
		}
	}
	for i := range e.members {
		if err := e.WaitHealthy(ctx, i); err != nil {
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

func (e *Etcd) start(i int) error {
	m := e.members[i]
	p, err := proc.Start(e.logger, "etcd-"+m.name, e.bin, filepath.Join(e.dir, m.name+".log"), m.args)
	if err != nil {
		return err
	}
	e.mu.Lock()
	m.p = p
	e.mu.Unlock()
	return nil
}

// WaitHealthy waits until member i answers /health with health true (it
// has a leader and serves requests).
func (e *Etcd) WaitHealthy(ctx context.Context, i int) error {
	e.mu.Lock()
	m := e.members[i]
	p := m.p
	e.mu.Unlock()
	return waitReady(ctx, p, fmt.Sprintf("http://127.0.0.1:%d/health", m.metrics), nil, "", func(body []byte) bool {
		return bytes.Contains(body, []byte(`"health":"true"`))
	})
}

// Kill SIGKILLs member i.
func (e *Etcd) Kill(i int) {
	e.mu.Lock()
	p := e.members[i].p
	e.mu.Unlock()
	p.Kill()
	<-p.Done()
}

// Restart starts member i again on its data (after Kill) and waits until it
// is healthy.
func (e *Etcd) Restart(ctx context.Context, i int) error {
	if err := e.start(i); err != nil {
		return err
	}
	return e.WaitHealthy(ctx, i)
}

// RestartAll starts every stopped member again on its data (after Stop or
// Kill of all: none can be healthy alone) and waits until all are healthy.
func (e *Etcd) RestartAll(ctx context.Context) error {
	for i, m := range e.members {
		e.mu.Lock()
		down := m.p == nil || m.p.Exited()
		e.mu.Unlock()
		if down {
			if err := e.start(i); err != nil {
				return err
			}
		}
	}
	for i := range e.members {
		if err := e.WaitHealthy(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every member.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.members {
		if m.p != nil {
			m.p.Stop()
		}
	}
}

// writePKI makes a CA, one certificate for the members (server and peer
// client: 127.0.0.1, localhost) and one client certificate for relays.
func (e *Etcd) writePKI() error {
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test etcd CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	e.CAFile = filepath.Join(e.dir, "ca.crt")
	if err := writePEM(e.CAFile, "CERTIFICATE", caDER); err != nil {
		return err
	}
	issue := func(name string, serial int64, eku []x509.ExtKeyUsage, server bool) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		t := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku,
		}
		if server {
			t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}
			t.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		return errors.Join(writePEM(filepath.Join(e.dir, name+".crt"), "CERTIFICATE", der), writePEM(filepath.Join(e.dir, name+".key"), "PRIVATE KEY", kb))
	}
	if err := issue("member", 2, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true); err != nil {
		return err
	}
	if err := issue("client", 3, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false); err != nil {
		return err
	}
	e.ClientCert, e.ClientKey = filepath.Join(e.dir, "client.crt"), filepath.Join(e.dir, "client.key")
	return nil
}
