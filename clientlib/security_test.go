package clientlib_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/relock/relock/clientlib"
	"github.com/relock/relock/commands"
)

func TestClient_PasswordAuthenticatesEveryConnection(t *testing.T) {
	srv := startServer(t, commands.Config{Users: []commands.User{commands.NewRequirePassUser("s3cret")}})
	ctx := testCtx(t, 10*time.Second)

	c := newClient(t, srv, func(o *clientlib.Options) { o.Password = "s3cret" })
	l, err := c.Lock(ctx, "auth", clientlib.TTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspect(ctx, "auth"); err != nil {
		t.Fatalf("shared pool: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	anon := newClient(t, srv)
	_, err = anon.Lock(ctx, "auth")
	var se *clientlib.ServerError
	if !errors.As(err, &se) || se.Code() != "NOAUTH" {
		t.Fatalf("Lock without the password = %v, want NOAUTH", err)
	}
}

func TestClient_TLS(t *testing.T) {
	serverCfg, rootCAs := selfSignedTLS(t)
	srv := startServer(t, commands.Config{TLS: serverCfg})
	c := newClient(t, srv, func(o *clientlib.Options) { o.TLSConfig = &tls.Config{RootCAs: rootCAs} })
	ctx := testCtx(t, 10*time.Second)
	l, err := c.Lock(ctx, "tls", clientlib.TTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	select { // renewals over TLS
	case <-l.Lost():
		t.Fatalf("lost: %v", l.Err())
	case <-time.After(500 * time.Millisecond):
	}
	srv.Stop(t)
	lostWithin(t, l, time.Second)
	if !errors.Is(l.Err(), clientlib.ErrConnClosed) {
		t.Fatalf("Err = %v, want ErrConnClosed", l.Err())
	}
}

// selfSignedTLS returns a server TLS config with a certificate for
// 127.0.0.1 and the pool that trusts it.
func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "relock test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}
