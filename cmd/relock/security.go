package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/relock/relock/commands"
	"go.yaml.in/yaml/v3"
)

// securityFlags are `relock server`'s authentication and TLS flags.
type securityFlags struct {
	Requirepass    string `help:"Password of the \"default\" user (AUTH pass); enables authentication." env:"RELOCK_REQUIREPASS"`
	UsersFile      string `help:"YAML users file (name, password_hash, locks, admin); reloaded on SIGHUP." placeholder:"FILE"`
	InsecureNoAuth bool   `help:"Allow listening on a non-loopback address without authentication."`
	AuthTimeout    string `help:"Close connections that have not authenticated within this time." default:"10s"`
	TLSCert        string `name:"tls-cert" help:"Serve TCP over TLS with this certificate (PEM)." placeholder:"FILE"`
	TLSKey         string `name:"tls-key" help:"Private key of --tls-cert (PEM)." placeholder:"FILE"`
	TLSClientCA    string `name:"tls-client-ca" help:"Require client certificates signed by this CA (mutual TLS)." placeholder:"FILE"`
	TLSAuthCN      bool   `name:"tls-auth-cn" help:"A verified client certificate's common name logs in as the user of that name."`
	MaxArgs        int    `help:"Most arguments in one request." default:"1024"`
	MaxArgBytes    int    `help:"Largest argument in bytes (a bigger one closes the connection with a protocol error)." default:"65536"`
}

// usersFile is the YAML form of --users-file.
type usersFile struct {
	Users []struct {
		Name         string   `yaml:"name"`
		PasswordHash string   `yaml:"password_hash"`
		Locks        []string `yaml:"locks"`
		Admin        bool     `yaml:"admin"`
	} `yaml:"users"`
}

// loadUsers reads the users in force: the users file's, plus the default
// user of --requirepass.
func (f *securityFlags) loadUsers() ([]commands.User, error) {
	var list []commands.User
	if f.UsersFile != "" {
		raw, err := os.ReadFile(f.UsersFile)
		if err != nil {
			return nil, fmt.Errorf("users file: %w", err)
		}
		var uf usersFile
		dec := yaml.NewDecoder(bytesReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&uf); err != nil {
			return nil, fmt.Errorf("users file %s: %w", f.UsersFile, err)
		}
		if len(uf.Users) == 0 {
			return nil, fmt.Errorf("users file %s defines no users", f.UsersFile)
		}
		for _, u := range uf.Users {
			usr := commands.User{Name: u.Name, PasswordHash: u.PasswordHash, Locks: u.Locks, Admin: u.Admin}
			if err := usr.Validate(); err != nil {
				return nil, fmt.Errorf("users file %s: %w", f.UsersFile, err)
			}
			list = append(list, usr)
		}
	}
	if f.Requirepass != "" {
		for _, u := range list {
			if u.Name == "default" {
				return nil, errors.New("--requirepass and a users-file user named \"default\" conflict")
			}
		}
		list = append(list, commands.NewRequirePassUser(f.Requirepass))
	}
	return list, nil
}

// tlsConfig builds the server's TLS configuration, or nil without TLS.
func (f *securityFlags) tlsConfig() (*tls.Config, error) {
	if f.TLSCert == "" && f.TLSKey == "" {
		if f.TLSClientCA != "" || f.TLSAuthCN {
			return nil, errors.New("--tls-client-ca and --tls-auth-cn need --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if f.TLSCert == "" || f.TLSKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.TLSClientCA != "" {
		pem, err := os.ReadFile(f.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS client CA %s: no PEM certificates", f.TLSClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	} else if f.TLSAuthCN {
		return nil, errors.New("--tls-auth-cn needs --tls-client-ca")
	}
	return cfg, nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
