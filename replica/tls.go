package replica

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Mutual TLS for the Raft transport.
//
// Whoever can send an AppendEntries to a member can write the replicated
// lock table (an expiry far in the future releases every lock), so every
// Raft connection, in and out, is TLS with a certificate on both ends.
//
// Identity: peers are identified by the CA alone. A connection is a
// member's if the certificate it presents chains to the CA and allows both
// TLS server and TLS client authentication (extended key usages serverAuth
// and clientAuth, or no extended key usage at all: every member both
// accepts and dials). The address dialled is not matched against the
// certificate's names: Raft addresses are whatever --raft-peers and
// CLUSTER ADDNODE say (IPs, host names, NATed ports), and a member's
// certificate then needs no SAN for each of them. The CA must therefore be
// one that signs cluster members only; a certificate it signs for
// anything else is a key to the cluster. Requiring both usages keeps out a
// client-only certificate (say, one made for the client port's
// --tls-client-ca) even where an operator did reuse a CA.

// DefaultHandshakeTimeout bounds an inbound TLS handshake when PeerTLS
// names none.
const DefaultHandshakeTimeout = 10 * time.Second

// ErrNotAdvertisable: a Raft listener on an unspecified address
// (0.0.0.0, ::) without an address to advertise; peers could not dial it.
var ErrNotAdvertisable = errors.New("replica: the Raft listen address is not advertisable (0.0.0.0 or ::); listen on a specific address")

// PeerTLS is the mutual TLS of every Raft connection: this node's
// certificate (presented when accepting and when dialling) and the CA that
// every member's certificate, this one's included, chains to.
type PeerTLS struct {
	Cert tls.Certificate
	CA   *x509.CertPool
	// HandshakeTimeout bounds an inbound handshake (0: 10s); a peer that
	// has not finished it by then is dropped.
	HandshakeTimeout time.Duration
}

// LoadPeerTLS reads a PEM certificate (its chain may follow it in the
// file), its key and the CA, and checks that the certificate is one the
// other members will accept: signed by the CA, valid now, and usable for
// both TLS server and client authentication.
func LoadPeerTLS(certFile, keyFile, caFile string) (*PeerTLS, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("raft TLS certificate: %w", err)
	}
	raw, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("raft TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("raft TLS CA %s: no PEM certificates", caFile)
	}
	p := &PeerTLS{Cert: cert, CA: pool}
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("raft TLS certificate %s: %w", certFile, err)
		}
		chain = append(chain, c)
	}
	if err := p.verifyChain(chain); err != nil {
		return nil, fmt.Errorf("raft TLS certificate %s would be refused by the other members: %w", certFile, err)
	}
	return p, nil
}

// verifyChain checks that chain[0] chains to the CA (through the rest of
// chain) for both server and client authentication.
func (p *PeerTLS) verifyChain(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: p.CA, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		if err != nil {
			return fmt.Errorf("certificate %q: %w", chain[0].Subject.CommonName, err)
		}
	}
	return nil
}

// verifyPeer is both ends' tls.Config.VerifyConnection.
func (p *PeerTLS) verifyPeer(cs tls.ConnectionState) error {
	return p.verifyChain(cs.PeerCertificates)
}

// serverConfig is the accepting end's: a client certificate is required
// and verified against the CA (by crypto/tls, then by verifyPeer for the
// server usage as well).
func (p *PeerTLS) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13, // both ends are relock
		Certificates:     []tls.Certificate{p.Cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        p.CA,
		VerifyConnection: p.verifyPeer,
		// No resumption: every connection shows its certificate.
		SessionTicketsDisabled: true,
	}
}

// clientConfig is the dialling end's. crypto/tls's own verification would
// match the dialled host against the certificate's names; peers are
// identified by the CA alone (see above), so it is replaced by
// verifyPeer, which checks the chain against the CA. The handshake still
// proves that the peer holds its certificate's key.
func (p *PeerTLS) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified by VerifyConnection, against the CA
		VerifyConnection:   p.verifyPeer,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &p.Cert, nil
		},
	}
}

// TLSStreamLayer is a raft.StreamLayer whose every connection is mutual
// TLS (see PeerTLS). An inbound connection is handed to Raft by Accept
// only once its handshake has succeeded; one that fails it, or does not
// finish it within the handshake timeout, is closed and logged, and Raft
// never sees a byte of it. Handshakes run in their own goroutines, so a
// slow or hostile peer delays no one else, and a failed one never makes
// Accept return an error (the network transport's accept loop backs off
// on errors).
type TLSStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	peer      *PeerTLS
	server    *tls.Config
	client    *tls.Config
	timeout   time.Duration
	log       *slog.Logger

	conns  chan net.Conn // handshaken inbound connections, for Accept
	ctx    context.Context
	cancel context.CancelFunc // by Close: stops the accept loop and handshakes in flight
	wg     sync.WaitGroup     // the accept loop and the handshakes in flight
	once   sync.Once
	err    error // of closing ln, returned by every Close
}

// ListenTLS listens on addr (host:port, TCP) and returns the stream layer
// for raft.NewNetworkTransport. advertise, if not nil, is the address peers
// dial; otherwise the listener's, which must then not be unspecified.
// log receives a line per refused connection (nil: discarded).
func ListenTLS(addr string, advertise net.Addr, peer *PeerTLS, log *slog.Logger) (*TLSStreamLayer, error) {
	if peer == nil {
		return nil, errors.New("replica: ListenTLS without PeerTLS")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
			ln.Close()
			return nil, ErrNotAdvertisable
		}
	}
	return NewTLSStreamLayer(ln, advertise, peer, log), nil
}

// NewTLSStreamLayer serves mutual TLS on ln, which it owns from now on
// (Close closes it). advertise is as for ListenTLS.
func NewTLSStreamLayer(ln net.Listener, advertise net.Addr, peer *PeerTLS, log *slog.Logger) *TLSStreamLayer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := peer.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &TLSStreamLayer{
		ln: ln, advertise: advertise, peer: peer,
		server: peer.serverConfig(), client: peer.clientConfig(),
		timeout: timeout, log: log,
		conns: make(chan net.Conn), ctx: ctx, cancel: cancel,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// acceptLoop accepts TCP connections and starts a handshake for each,
// until Close.
func (l *TLSStreamLayer) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("raft accept", "err", err, "retry_in", delay)
			select {
			case <-l.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

// handshake completes an inbound connection's mutual TLS handshake within
// the timeout and hands it to Accept, or closes it.
func (l *TLSStreamLayer) handshake(raw net.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	defer cancel()
	c := tls.Server(raw, l.server)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		if l.ctx.Err() == nil {
			l.log.Warn("raft connection refused", "addr", raw.RemoteAddr().String(), "err", err)
		}
		return
	}
	select {
	case l.conns <- c:
	case <-l.ctx.Done():
		c.Close()
	}
}

// Accept returns the next inbound connection whose mutual TLS handshake
// has succeeded. It returns an error only once the layer is closed.
func (l *TLSStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting, drops the handshakes in flight and waits for
// them. Connections already handed out are their owner's to close. It is
// idempotent.
func (l *TLSStreamLayer) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.err = l.ln.Close()
		l.wg.Wait()
	})
	return l.err
}

// Addr is the address peers dial: advertise, or the listener's.
func (l *TLSStreamLayer) Addr() net.Addr {
	if l.advertise != nil {
		return l.advertise
	}
	return l.ln.Addr()
}

// Dial connects to a member and completes the mutual TLS handshake, both
// within timeout (0: the handshake timeout).
func (l *TLSStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = l.timeout
	}
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	d := &tls.Dialer{Config: l.client}
	return d.DialContext(ctx, "tcp", string(address))
}

var _ raft.StreamLayer = (*TLSStreamLayer)(nil)
