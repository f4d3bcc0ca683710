package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/relock/relock/clientlib"
)

// clientFlags are the connection flags the tools share (run, locks,
// unlock, cluster, bench), embedded in each tool's command. Their variables
// are RELOCK_ADDR, RELOCK_USER, RELOCK_PASSWORD and RELOCK_CLIENT_TLS*: the
// server's own TLS flags read RELOCK_TLS_* (see envars.go).
//
// They are declared on each tool, not on the root: kong refuses a flag that
// a parent command declares too, and the server has its own --tls-cert and
// --tls-key. Written before the tool's name (relock --addr X
// locks) they are moved after it by hoistClientFlags in main.go.
type clientFlags struct {
	Addr     string `env:"RELOCK_ADDR" help:"Server address for the tools: host:port, or a unix socket path; a comma-separated list for a cluster." default:"127.0.0.1:6380" placeholder:"ADDR"`
	User     string `env:"RELOCK_USER" help:"User to authenticate as (ACL users)." placeholder:"NAME"`
	Password string `env:"RELOCK_PASSWORD" help:"Password to authenticate with." placeholder:"PASS"`
	TLS      bool   `name:"tls" env:"RELOCK_CLIENT_TLS" help:"Connect with TLS (implied by --tls-ca, --tls-cert)."`
	TLSCA    string `name:"tls-ca" env:"RELOCK_CLIENT_TLS_CA" predictor:"file" help:"PEM file of the CA(s) that sign the server's certificate (default: the system's)." placeholder:"FILE"`
	TLSCert  string `name:"tls-cert" env:"RELOCK_CLIENT_TLS_CERT" predictor:"file" help:"PEM certificate of this client, for mutual TLS." placeholder:"FILE"`
	TLSKey   string `name:"tls-key" env:"RELOCK_CLIENT_TLS_KEY" predictor:"file" help:"PEM private key of --tls-cert." placeholder:"FILE"`
}

// newClient returns a clientlib Client for the flags. go-redis's own log
// lines are silenced: the tools report errors themselves, once.
func (f *clientFlags) newClient() (*clientlib.Client, error) {
	redis.SetLogger(silentLogger{})
	// A comma-separated list names the members of a cluster: the tools
	// then follow -MOVED to the leader.
	addrs := strings.Split(f.Addr, ",")
	opt := clientlib.Options{
		Addr:       addrs[0],
		Username:   f.User,
		Password:   f.Password,
		ClientName: "relock-cli",
	}
	if len(addrs) > 1 {
		opt.Addrs = addrs[1:]
	}
	cfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	opt.TLSConfig = cfg
	return clientlib.New(opt)
}

// tlsConfig builds the TLS configuration, or nil without TLS.
func (f *clientFlags) tlsConfig() (*tls.Config, error) {
	if !f.TLS && f.TLSCA == "" && f.TLSCert == "" && f.TLSKey == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.TLSCA != "" {
		pem, err := os.ReadFile(f.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", f.TLSCA)
		}
		cfg.RootCAs = pool
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if f.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// silentLogger drops go-redis's log lines.
type silentLogger struct{}

func (silentLogger) Printf(context.Context, string, ...any) {}
