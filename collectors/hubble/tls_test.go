package hubble

import (
	"github.com/meridianhq/meridian/internal/promtest"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	dstls "github.com/grafana/dskit/crypto/tls"
	"google.golang.org/grpc/credentials"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate as PEM
// files, the way a relay's mTLS secrets are mounted.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPool *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hubble-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), ca: ca, caKey: key, caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	p.write(t, "ca.crt", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue returns a key pair signed by the CA and writes it as name.crt and name.key.
func (p *pki) issue(t *testing.T, name string, usage x509.ExtKeyUsage) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	p.write(t, name+".crt", "CERTIFICATE", der)
	p.write(t, name+".key", "EC PRIVATE KEY", kder)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMutualTLS streams from a relay that requires a client certificate: the relay
// configured with the CA and a client key pair from files gets every flow; one without
// a client certificate is refused and retried.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	serverCert := p.issue(t, "server", x509.ExtKeyUsageServerAuth)
	p.issue(t, "client", x509.ExtKeyUsageClientAuth)
	srv := hubbletest.NewServer(load(t, "hubble-otel-basic-sample-400-tcp-flows.json")).WithTLS(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: p.caPool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	on := true
	cfg := testConfig(
		RelayConfig{Cluster: "mtls", Address: srv.Addr(), TLSEnabled: &on, TLS: dstls.ClientConfig{
			CAPath: filepath.Join(p.dir, "ca.crt"), CertPath: filepath.Join(p.dir, "client.crt"), KeyPath: filepath.Join(p.dir, "client.key")}},
		RelayConfig{Cluster: "nocert", Address: srv.Addr(), TLSEnabled: &on, TLS: dstls.ClientConfig{CAPath: filepath.Join(p.dir, "ca.crt")}},
	)
	out := &sink{}
	_, reg := startCollector(t, cfg, out, nil, nil)
	waitFor(t, "flows over mTLS", func() bool { f, _ := out.counts("mtls"); return f == 400 })
	waitFor(t, "the relay to refuse the client without a certificate", func() bool {
		return promtest.Sum(t, reg, "meridian_hubble_relay_errors_total", "relay", "nocert") >= 1
	})
	if f, _ := out.counts("nocert"); f != 0 {
		t.Errorf("%d flows without a client certificate", f)
	}
}
