package replica

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/relock/relock/locktable"
)

// Mutual TLS on the Raft transport: a cluster forms and replicates over
// it, and nothing without a member's certificate gets an entry appended.

// netTimeout is the Raft timing of clusters on real transports: loopback
// TCP under -race on a shared machine is slower than in-memory pipes.
const netTimeout = 300 * time.Millisecond

// testCA signs certificates for the tests.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial int64
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	ca := &testCA{pool: x509.NewCertPool()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ca.template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.key = key
	ca.pool.AddCert(ca.cert)
	return ca
}

func (ca *testCA) template(cn string) *x509.Certificate {
	ca.serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

// issue returns a certificate for cn with these extended key usages (none:
// any use), with no names: peers are identified by the CA alone.
func (ca *testCA) issue(t *testing.T, cn string, usages ...x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ca.template(cn)
	tmpl.ExtKeyUsage = usages
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// member returns the PeerTLS of a cluster member: a certificate for both
// server and client authentication, and the CA.
func (ca *testCA) member(t *testing.T, cn string) *PeerTLS {
	t.Helper()
	return &PeerTLS{Cert: ca.issue(t, cn, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth), CA: ca.pool}
}

// writeFiles writes cert's chain, its key and the CA as PEM files in dir.
func (ca *testCA) writeFiles(t *testing.T, dir, name string, cert tls.Certificate) (certFile, keyFile, caFile string) {
	t.Helper()
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return write(name+".pem", "CERTIFICATE", cert.Certificate[0]),
		write(name+"-key.pem", "PRIVATE KEY", kder),
		write(name+"-ca.pem", "CERTIFICATE", ca.cert.Raw)
}

// logBuffer is an io.Writer safe for concurrent use, for a test's slog.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tlsTransport is a network transport on a TLSStreamLayer on a free
// loopback port, closed when the test ends.
func tlsTransport(t *testing.T, peer *PeerTLS, log *slog.Logger) raft.Transport {
	t.Helper()
	layer, err := ListenTLS("127.0.0.1:0", nil, peer, log)
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransport(layer, 3, 2*time.Second, io.Discard)
	t.Cleanup(func() { tr.Close() })
	return tr
}

// newTLSCluster is n nodes on mutual TLS transports, each with its own
// certificate from ca; refused connections are logged to log.
func newTLSCluster(t *testing.T, n int, ca *testCA, log *slog.Logger) *testCluster {
	t.Helper()
	var trans []raft.Transport
	for i := 0; i < n; i++ {
		trans = append(trans, tlsTransport(t, ca.member(t, "node"+strconv.Itoa(i)), log))
	}
	return startTestCluster(t, trans, netTimeout)
}

// attackerLayer dials TLS with whatever certificate it has (none, or one
// the cluster should refuse) and, unlike TLSStreamLayer, trusts any server:
// the test is whether the member accepting the connection refuses it. It
// accepts nothing.
type attackerLayer struct {
	cert *tls.Certificate // nil: no client certificate
	done chan struct{}
	once sync.Once
}

func (a *attackerLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if a.cert == nil {
			return &tls.Certificate{}, nil
		}
		return a.cert, nil
	}}
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), cfg)
}

func (a *attackerLayer) Accept() (net.Conn, error) {
	<-a.done
	return nil, net.ErrClosed
}

func (a *attackerLayer) Close() error {
	a.once.Do(func() { close(a.done) })
	return nil
}

func (a *attackerLayer) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// forgeRelease sends target one AppendEntries, as a leader of a later term
// would, whose entry force-releases the lock name, and commits it. On a
// transport that lets it through, target applies it.
func forgeRelease(t *testing.T, attacker raft.Transport, target *Node, addr raft.ServerAddress, name string) (*raft.AppendEntriesResponse, error) {
	t.Helper()
	stats := target.Raft.Stats()
	lastTerm, err := strconv.ParseUint(stats["last_log_term"], 10, 64)
	if err != nil {
		t.Fatalf("last_log_term %q: %v", stats["last_log_term"], err)
	}
	last := target.Raft.LastIndex()
	term := target.Raft.CurrentTerm() + 100
	data, err := (&Op{Kind: OpForce, Now: time.Now().UnixNano(), Name: name}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	req := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(attacker.LocalAddr())},
		Term:              term,
		PrevLogEntry:      last,
		PrevLogTerm:       lastTerm,
		Entries:           []*raft.Log{{Index: last + 1, Term: term, Type: raft.LogCommand, Data: data}},
		LeaderCommitIndex: last + 1,
	}
	var resp raft.AppendEntriesResponse
	err = attacker.AppendEntries(target.ID, addr, req, &resp)
	return &resp, err
}

// holdVictim opens a session on the leader and takes "victim" with it.
func holdVictim(c *testCluster, leader int) {
	c.t.Helper()
	now := time.Now().UnixNano()
	c.propose(leader, Op{Kind: OpOpen, Now: now, Session: 1})
	if r := c.propose(leader, Op{Kind: OpAcquire, Now: now, Session: 1, Request: locktable.Request{Name: "victim", Rand: 7}}); r.Outcome != locktable.Granted {
		c.t.Fatalf("acquire victim: %+v", r)
	}
	c.converge(leader)
}

// victimHeld reports whether node i's table holds "victim".
func (c *testCluster) victimHeld(i int) bool {
	li, ok := c.nodes[i].FSM.Table().Lock("victim", time.Now().UnixNano())
	return ok && len(li.Holds) == 1
}

// TestPlainTCP_AnyoneWhoReachesTheRaftPortCanReleaseLocks is the threat
// that mutual TLS closes: on a plain TCP transport, one forged
// AppendEntries from a stranger is applied and releases a held lock.
func TestPlainTCP_AnyoneWhoReachesTheRaftPortCanReleaseLocks(t *testing.T) {
	var trans []raft.Transport
	for i := 0; i < 3; i++ {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 2*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		trans = append(trans, tr)
	}
	c := startTestCluster(t, trans, netTimeout)
	l := c.leader()
	holdVictim(c, l)
	target := (l + 1) % 3

	intruder, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	resp, err := forgeRelease(t, intruder, c.nodes[target], c.addrs[target], "victim")
	if err != nil || !resp.Success {
		t.Fatalf("forged AppendEntries on plain TCP: %+v, %v; want it accepted", resp, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.victimHeld(target) {
		if time.Now().After(deadline) {
			t.Fatal("the forged release was accepted but not applied within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLS_ClusterFormsAndReplicatesOverMutualTLS: three nodes, each with
// its own certificate from one CA (no names in them), elect a leader and
// reach byte-identical state over mutual TLS.
func TestTLS_ClusterFormsAndReplicatesOverMutualTLS(t *testing.T) {
	var logs logBuffer
	c := newTLSCluster(t, 3, newTestCA(t, "cluster CA"), slog.New(slog.NewTextHandler(&logs, nil)))
	l := c.leader()
	g := newOpGen(7)
	for i := 0; i < 200; i++ {
		op := g.next()
		g.learn(op, c.propose(l, op))
	}
	snaps := c.converge(l)
	for i := 1; i < len(snaps); i++ {
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("replica %d differs from replica 0 over TLS", i)
		}
	}
	if strings.Contains(logs.String(), "refused") {
		t.Errorf("members refused each other:\n%s", logs.String())
	}
}

// TestTLS_ForgedAppendEntriesAreDropped: the forgery that works on plain
// TCP (above) gets nowhere against a mutual TLS cluster, whether sent in
// plain TCP, over TLS without a certificate, with a certificate of another
// CA, or with a client-only certificate of the cluster's own CA. No member
// applies it or moves to its term, each refusal is logged, and the cluster
// keeps replicating.
func TestTLS_ForgedAppendEntriesAreDropped(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	other := newTestCA(t, "some other CA")
	var logs logBuffer
	c := newTLSCluster(t, 3, ca, slog.New(slog.NewTextHandler(&logs, nil)))
	l := c.leader()
	holdVictim(c, l)
	startTerm := c.nodes[l].Raft.CurrentTerm()

	otherCert := other.issue(t, "node0", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	clientOnly := ca.issue(t, "billing", x509.ExtKeyUsageClientAuth)
	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	attackers := []struct {
		name  string
		trans raft.Transport
	}{
		{"plain TCP", plain},
		{"TLS without a certificate", raft.NewNetworkTransport(&attackerLayer{done: make(chan struct{})}, 1, 2*time.Second, io.Discard)},
		{"certificate of another CA", raft.NewNetworkTransport(&attackerLayer{cert: &otherCert, done: make(chan struct{})}, 1, 2*time.Second, io.Discard)},
		{"client-only certificate of the cluster's CA", raft.NewNetworkTransport(&attackerLayer{cert: &clientOnly, done: make(chan struct{})}, 1, 2*time.Second, io.Discard)},
	}
	for _, a := range attackers {
		defer a.trans.(raft.WithClose).Close()
		for target := range c.nodes {
			resp, err := forgeRelease(t, a.trans, c.nodes[target], c.addrs[target], "victim")
			if err == nil {
				t.Errorf("%s: the forged AppendEntries to node %d got a reply: %+v", a.name, target, resp)
			}
		}
	}

	// Had any forgery reached Raft, its node would have moved to term+100
	// and released victim; give a late one time to show.
	time.Sleep(3 * netTimeout)
	l = c.leader()
	for i, n := range c.nodes {
		if !c.victimHeld(i) {
			t.Errorf("node %d released victim", i)
		}
		if term := n.Raft.CurrentTerm(); term >= startTerm+100 {
			t.Errorf("node %d moved to the forged term %d", i, term)
		}
	}
	if n := strings.Count(logs.String(), "raft connection refused"); n < len(attackers)*len(c.nodes) {
		t.Errorf("%d refusals logged, want at least %d:\n%s", n, len(attackers)*len(c.nodes), logs.String())
	}
	// The cluster still works, and agrees.
	now := time.Now().UnixNano()
	c.propose(l, Op{Kind: OpOpen, Now: now, Session: 2})
	if r := c.propose(l, Op{Kind: OpAcquire, Now: now, Session: 2, Request: locktable.Request{Name: "after", Rand: 8}}); r.Outcome != locktable.Granted {
		t.Fatalf("acquire after the attacks: %+v", r)
	}
	snaps := c.converge(l)
	for i := 1; i < len(snaps); i++ {
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("replica %d differs from replica 0 after the attacks", i)
		}
	}
}

// TestTLSStreamLayer_StalledAndFailedHandshakesDoNotBlockAccept: a
// connection that never starts its handshake and one that fails it delay
// nobody: a member dialling meanwhile is accepted at once, Accept never
// returns an error until Close, and the stalled connection is dropped at
// the handshake timeout.
func TestTLSStreamLayer_StalledAndFailedHandshakesDoNotBlockAccept(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	srvPeer := ca.member(t, "server")
	srvPeer.HandshakeTimeout = 3 * time.Second
	srv, err := ListenTLS("127.0.0.1:0", nil, srvPeer, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 4)
	go func() {
		for {
			c, err := srv.Accept()
			acc <- accepted{c, err}
			if err != nil {
				return
			}
		}
	}()
	addr := raft.ServerAddress(srv.Addr().String())

	stalled, err := net.Dial("tcp", string(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stranger, err := ListenTLS("127.0.0.1:0", nil, newTestCA(t, "other CA").member(t, "stranger"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if c, err := stranger.Dial(addr, 2*time.Second); err == nil {
		// TLS 1.3: the client learns of the refusal at its first read.
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a peer with another CA's certificate was served")
		}
		c.Close()
	}

	member, err := ListenTLS("127.0.0.1:0", nil, ca.member(t, "member"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	mc, err := member.Dial(addr, 2*time.Second)
	if err != nil {
		t.Fatalf("a member's dial: %v", err)
	}
	defer mc.Close()
	if _, err := mc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-acc:
		if a.err != nil {
			t.Fatalf("Accept returned %v", a.err)
		}
		defer a.c.Close()
		a.c.SetDeadline(time.Now().Add(2 * time.Second))
		got := make([]byte, 4)
		if _, err := io.ReadFull(a.c, got); err != nil || string(got) != "ping" {
			t.Fatalf("read from the member: %q, %v", got, err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the member was not accepted within 2s")
	}
	// The stalled connection is still waiting for its handshake (it held
	// up no one), and is dropped when the handshake timeout runs out.
	stalled.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := stalled.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled connection before the timeout: %v, want it still open", err)
	}
	stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stalled.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the stalled connection was not dropped at the handshake timeout")
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Close() // idempotent
	select {
	case a := <-acc:
		if a.err == nil {
			t.Fatal("Accept returned a connection nobody made")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

// TestLoadPeerTLS_RefusesACertificateOtherMembersWouldRefuse: a node whose
// own certificate the others would refuse says so at start.
func TestLoadPeerTLS_RefusesACertificateOtherMembersWouldRefuse(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	other := newTestCA(t, "other CA")
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		wantOK bool
	}{
		{"server and client auth", ca.issue(t, "a", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth), true},
		{"no extended key usage", ca.issue(t, "b"), true},
		{"client auth only", ca.issue(t, "c", x509.ExtKeyUsageClientAuth), false},
		{"server auth only", ca.issue(t, "d", x509.ExtKeyUsageServerAuth), false},
		{"another CA", other.issue(t, "e", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile, caFile := ca.writeFiles(t, t.TempDir(), "node", tc.cert)
			p, err := LoadPeerTLS(certFile, keyFile, caFile)
			if gotOK := err == nil; gotOK != tc.wantOK {
				t.Fatalf("LoadPeerTLS = %v, %v; want ok=%v", p, err, tc.wantOK)
			}
		})
	}
	if _, err := LoadPeerTLS("/nonexistent.pem", "/nonexistent-key.pem", "/nonexistent-ca.pem"); err == nil {
		t.Fatal("LoadPeerTLS of missing files succeeded")
	}
}
