package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLS and mutual TLS with go-redis and redis-cli. Every certificate is
// made by the test, into its own temporary directory.

// testCerts is a CA, a server certificate for 127.0.0.1/::1/localhost, and
// client certificates by common name, as PEM files.
type testCerts struct {
	dir                               string
	caCert, serverCert, serverKey     string
	pool                              *x509.CertPool // trusts the CA
	ca                                *x509.Certificate
	caKey                             *ecdsa.PrivateKey
	untrustedCA                       *x509.Certificate // another CA, not given to the server
	untrustedKey                      *ecdsa.PrivateKey
	clientCertFiles, clientKeyFiles   map[string]string
	clientPairs, untrustedClientPairs map[string]tls.Certificate
	serialCounter                     int64
}

func makeTestCerts(t testing.TB) *testCerts {
	t.Helper()
	c := &testCerts{dir: t.TempDir(), pool: x509.NewCertPool(),
		clientCertFiles: map[string]string{}, clientKeyFiles: map[string]string{},
		clientPairs: map[string]tls.Certificate{}, untrustedClientPairs: map[string]tls.Certificate{}}
	c.ca, c.caKey = c.newCA(t, "relock test CA")
	c.untrustedCA, c.untrustedKey = c.newCA(t, "some other CA")
	c.pool.AddCert(c.ca)
	c.caCert = c.writePEM(t, "ca.pem", "CERTIFICATE", c.ca.Raw)

	srvTmpl := c.template("relock test server")
	srvTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	srvTmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	srvTmpl.DNSNames = []string{"localhost"}
	der, key := c.sign(t, srvTmpl, c.ca, c.caKey)
	c.serverCert = c.writePEM(t, "server.pem", "CERTIFICATE", der)
	c.serverKey = c.writeKey(t, "server-key.pem", key)
	return c
}

// client returns the paths of a client certificate (and key) with common
// name cn, signed by the trusted CA, and the pair for go-redis.
func (c *testCerts) client(t testing.TB, cn string) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	if p, ok := c.clientPairs[cn]; ok {
		return c.clientCertFiles[cn], c.clientKeyFiles[cn], p
	}
	tmpl := c.template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, key := c.sign(t, tmpl, c.ca, c.caKey)
	certFile = c.writePEM(t, "client-"+cn+".pem", "CERTIFICATE", der)
	keyFile = c.writeKey(t, "client-"+cn+"-key.pem", key)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c.clientCertFiles[cn], c.clientKeyFiles[cn], c.clientPairs[cn] = certFile, keyFile, pair
	return certFile, keyFile, pair
}

// untrustedClient returns a client pair with common name cn signed by a
// CA the server does not trust.
func (c *testCerts) untrustedClient(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	tmpl := c.template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, key := c.sign(t, tmpl, c.untrustedCA, c.untrustedKey)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func (c *testCerts) newCA(t testing.TB, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	tmpl := c.template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (c *testCerts) template(cn string) *x509.Certificate {
	c.serialCounter++
	return &x509.Certificate{
		SerialNumber: big.NewInt(c.serialCounter),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

func (c *testCerts) sign(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func (c *testCerts) writePEM(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(c.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (c *testCerts) writeKey(t testing.TB, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return c.writePEM(t, name, "PRIVATE KEY", der)
}

// tlsOpts makes a go-redis client speak TLS, trusting the test CA and
// presenting the given client certificates.
func tlsOpts(certs *testCerts, pairs ...tls.Certificate) func(*redis.Options) {
	return func(o *redis.Options) {
		o.TLSConfig = &tls.Config{RootCAs: certs.pool, Certificates: pairs, MinVersion: tls.VersionTLS12}
	}
}

// refusedClient connects a go-redis client that the server must refuse
// and returns the error of its first command.
func refusedClient(t testing.TB, srv *server, opts ...func(*redis.Options)) error {
	t.Helper()
	o := &redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	defer c.Close()
	return c.Do(ctxFor(t, 10*time.Second), "TRYLOCK", "refused").Err()
}

// cliTLS runs one redis-cli command over TLS and returns its output.
func cliTLS(t testing.TB, srv *server, tlsArgs []string, args ...string) (string, error) {
	t.Helper()
	bin := needTool(t, "redis-cli")
	full := append(append([]string{"-h", "127.0.0.1", "-p", srv.Port(), "--tls"}, tlsArgs...), args...)
	out, err := runBounded(exec.Command(bin, full...), 10*time.Second)
	return strings.TrimSpace(out), err
}

func TestTLS_GoRedisAndRedisCLI(t *testing.T) {
	t.Parallel()
	certs := makeTestCerts(t)
	srv := startServer(t, "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey)
	c := srv.client(t, tlsOpts(certs))
	key := mustLock(t, c, "LOCK", "tls", "TTL", 60000)
	if !plainKey.MatchString(key) {
		t.Fatalf("LOCK over TLS = %q", key)
	}

	// redis-cli --tls --cacert: its hold is released when it exits.
	out, err := cliTLS(t, srv, []string{"--cacert", certs.caCert}, "TRYLOCK", "cli-tls")
	if err != nil || !plainKey.MatchString(out) {
		t.Fatalf("redis-cli --tls TRYLOCK = %q, %v; want a key", out, err)
	}
	// Without the CA redis-cli does not trust the server.
	out, _ = cliTLS(t, srv, nil, "PING")
	if strings.Contains(out, "PONG") {
		t.Errorf("redis-cli --tls without --cacert got %q; want a verification failure", out)
	}

	// A plain-text client to the TLS port fails cleanly: no reply, the
	// connection closes, nothing hangs.
	for _, hello := range []string{"PING\r\n", "*1\r\n$4\r\nPING\r\n", "GET / HTTP/1.0\r\n\r\n"} {
		raw, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		raw.Write([]byte(hello))
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(raw)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("plain %q to the TLS port: the connection stayed open", hello)
		}
		if strings.Contains(string(got), "PONG") {
			t.Errorf("plain %q to the TLS port was answered: %q", hello, got)
		}
		raw.Close()
	}
	if err := refusedClient(t, srv); err == nil {
		t.Error("a plain go-redis client to the TLS port: no error")
	}

	// The server keeps serving the TLS client.
	if n, err := c.Do(ctxFor(t, 5*time.Second), "CHECK", "tls", key).Int(); err != nil || n <= 0 {
		t.Errorf("CHECK over TLS = %d, %v", n, err)
	}
	mustUnlock(t, c, "tls", key)
	eventually(t, 2*time.Second, func() bool { return dbsize(t, c) == 0 }, "redis-cli's hold outlived it")
}

func TestTLS_MutualTLSRefusesClientsWithoutTrustedCertificate(t *testing.T) {
	t.Parallel()
	certs := makeTestCerts(t)
	srv := startServer(t, "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey, "--tls-client-ca", certs.caCert)
	certFile, keyFile, pair := certs.client(t, "app")
	c := srv.client(t, tlsOpts(certs, pair))
	key := mustLock(t, c, "LOCK", "mtls", "TTL", 60000)

	for name, opts := range map[string][]func(*redis.Options){
		"no certificate":        {tlsOpts(certs)},
		"untrusted certificate": {tlsOpts(certs, certs.untrustedClient(t, "app"))},
		"plain text":            nil,
	} {
		if err := refusedClient(t, srv, opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	out, err := cliTLS(t, srv, []string{"--cacert", certs.caCert, "--cert", certFile, "--key", keyFile}, "TRYLOCK", "cli-mtls")
	if err != nil || !plainKey.MatchString(out) {
		t.Errorf("redis-cli with a client certificate: TRYLOCK = %q, %v; want a key", out, err)
	}
	out, _ = cliTLS(t, srv, []string{"--cacert", certs.caCert}, "TRYLOCK", "cli-mtls")
	if plainKey.MatchString(out) {
		t.Errorf("redis-cli without a client certificate got a key: %q", out)
	}

	// The refusals changed nothing for the client with a certificate.
	if n, err := c.Do(ctxFor(t, 5*time.Second), "CHECK", "mtls", key).Int(); err != nil || n <= 0 {
		t.Errorf("CHECK = %d, %v", n, err)
	}
	if l, _ := lockOf(t, c, "refused"); len(l.Holders) != 0 {
		t.Errorf("a refused client took a lock: %+v", l)
	}
	mustUnlock(t, c, "mtls", key)
}

// TestTLS_ClientCertificateCNIsTheUser: with --tls-auth-cn a verified
// certificate logs in as the user of its common name, with that user's
// permissions; a name that is no user must AUTH.
func TestTLS_ClientCertificateCNIsTheUser(t *testing.T) {
	t.Parallel()
	certs := makeTestCerts(t)
	users := filepath.Join(t.TempDir(), "users.yaml")
	writeUsersFile(t, users,
		userEntry{name: "app", locks: []string{"app:*"}}, // certificate only: no password
		userEntry{name: "root", hash: bcryptHash(t, "root-pass"), admin: true})
	srv := startServer(t, "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey,
		"--tls-client-ca", certs.caCert, "--tls-auth-cn", "--users-file", users)
	ctx := ctxFor(t, 20*time.Second)
	_, _, appPair := certs.client(t, "app")
	_, _, rootPair := certs.client(t, "root")
	_, _, strangerPair := certs.client(t, "stranger")

	app := srv.client(t, tlsOpts(certs, appPair))
	key := mustLock(t, app, "TRYLOCK", "app:cn")
	if err := app.Do(ctx, "TRYLOCK", "other:cn").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("CN=app TRYLOCK other:cn: %v; want NOPERM", err)
	}
	for _, args := range [][]any{{"FORCEUNLOCK", "app:cn"}, {"CLIENT", "LIST"}} {
		if err := app.Do(ctx, args...).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("CN=app %v: %v; want NOPERM", args, err)
		}
	}

	root := srv.client(t, tlsOpts(certs, rootPair))
	mustLock(t, root, "TRYLOCK", "other:cn")
	if ls, err := readLocks(ctx, app); err != nil || len(ls) != 1 || ls[0].Name != "app:cn" {
		t.Errorf("LOCKS as CN=app = %+v, %v; want app:cn only", ls, err)
	}
	if err := root.Do(ctx, "CLIENT", "LIST").Err(); err != nil {
		t.Errorf("CN=root CLIENT LIST: %v", err)
	}

	// A trusted certificate whose name is no user: NOAUTH until AUTH. A
	// certificate-only user has no password to AUTH with.
	stranger := srv.client(t, tlsOpts(certs, strangerPair))
	if err := stranger.Do(ctx, "TRYLOCK", "app:x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("CN=stranger TRYLOCK: %v; want NOAUTH", err)
	}
	for _, pass := range []string{"", "app", "stranger"} {
		if err := stranger.Do(ctx, "AUTH", "app", pass).Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
			t.Errorf("AUTH app %q: %v; want WRONGPASS", pass, err)
		}
	}
	if err := stranger.Do(ctx, "AUTH", "root", "root-pass").Err(); err != nil {
		t.Fatalf("AUTH root: %v", err)
	}
	if n, err := stranger.Do(ctx, "FORCEUNLOCK", "app:cn").Int(); err != nil || n != 1 {
		t.Errorf("FORCEUNLOCK as root = %d, %v; want 1", n, err)
	}
	if err := app.Do(ctx, "CHECK", "app:cn", key).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOTHELD") {
		t.Errorf("CHECK after FORCEUNLOCK: %v; want NOTHELD", err)
	}

	// RESET makes a connection as new: it is logged in by its
	// certificate again at its next command.
	one := app.Conn()
	defer one.Close()
	if err := one.Do(ctx, "RESET").Err(); err != nil {
		t.Fatalf("RESET: %v", err)
	}
	if k, err := one.Do(ctx, "TRYLOCK", "app:reset").Text(); err != nil || !plainKey.MatchString(k) {
		t.Errorf("CN=app TRYLOCK after RESET = %q, %v; want a key (logged in by the certificate again)", k, err)
	}

	// redis-cli with the app certificate is app.
	certFile, keyFile, _ := certs.client(t, "app")
	tlsArgs := []string{"--cacert", certs.caCert, "--cert", certFile, "--key", keyFile}
	if out, err := cliTLS(t, srv, tlsArgs, "TRYLOCK", "app:cli"); err != nil || !plainKey.MatchString(out) {
		t.Errorf("redis-cli CN=app TRYLOCK app:cli = %q, %v; want a key", out, err)
	}
	if out, _ := cliTLS(t, srv, tlsArgs, "TRYLOCK", "other:cli"); !strings.Contains(out, "NOPERM") {
		t.Errorf("redis-cli CN=app TRYLOCK other:cli = %q; want NOPERM", out)
	}
}

// A TLS connection that never finishes its handshake is closed after
// --auth-timeout, even under mutual TLS without users (no AUTH to wait
// for), so stalled handshakes cannot hold --max-clients slots.
func TestTLS_StalledHandshakeIsClosed(t *testing.T) {
	certs := makeTestCerts(t)
	srv := startServer(t, "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey,
		"--tls-client-ca", certs.caCert, "--auth-timeout", "300ms")
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Send nothing: no ClientHello. The server must close within a bound.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("read got data from a server that never received a ClientHello")
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v; want it closed after --auth-timeout", time.Since(start))
	}
	// A well-behaved client still gets in.
	_, _, pair := certs.client(t, "app")
	c := srv.client(t, tlsOpts(certs, pair))
	if err := c.Ping(ctxFor(t, 5*time.Second)).Err(); err != nil {
		t.Fatalf("PING over mTLS: %v", err)
	}
}

// TestTLS_AWaiterWithAFullPipelineThatResetsLeavesTheQueue: a TLS
// connection is served by a goroutine, which stops reading a connection
// whose unrun input is full (1 MiB behind a LOCK that waits). Its
// client's reset (a killed process, a crashed host) must still take its
// request out of the queue at once, as on the event loops, rather than
// leave it to be granted to nobody.
func TestTLS_AWaiterWithAFullPipelineThatResetsLeavesTheQueue(t *testing.T) {
	certs := makeTestCerts(t)
	srv := startServer(t, "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey)
	holder := srv.client(t, tlsOpts(certs))
	mustLock(t, holder, "LOCK", "tls:x")
	raw, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	waiter := tls.Client(raw, &tls.Config{RootCAs: certs.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	// 2.4 MiB of PINGs behind the LOCK that waits, a write each: TLS
	// records then end where requests do, and the server stops reading
	// once 1 MiB of whole requests wait (a request read in part is read
	// on).
	arg := strings.Repeat("p", 60<<10)
	requests := []string{"*2\r\n$4\r\nLOCK\r\n$5\r\ntls:x\r\n"}
	for range 40 {
		requests = append(requests, fmt.Sprintf("*2\r\n$4\r\nPING\r\n$%d\r\n%s\r\n", len(arg), arg))
	}
	waiter.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, r := range requests {
		if _, err := waiter.Write([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() bool { return infoField(t, holder, "waiters") == "1" }, "the LOCK over TLS queued")
	raw.(*net.TCPConn).SetLinger(0) // a reset, not an orderly close
	raw.Close()
	eventually(t, 3*time.Second, func() bool { return infoField(t, holder, "waiters") == "0" },
		"the waiter whose TLS connection was reset left the queue (it would be granted the lock after it is gone)")
}
