package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

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
	Users []usersFileUser `yaml:"users"`
}

type usersFileUser struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"`
	Locks        []string `yaml:"locks"`
	Admin        bool     `yaml:"admin"`
}

// The keys a users file may use, at the top and in each user.
var (
	usersFileKeys = []string{"users"}
	userKeys      = []string{"name", "password_hash", "locks", "admin"}
)

// parseUsersFile decodes a users file strictly: a key it does not know is
// an error naming the key and its line, so that a misspelled password_hash
// or locks never silently leaves a user without a password or locks.
func parseUsersFile(raw []byte) (usersFile, error) {
	var uf usersFile
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return uf, err
	}
	if len(doc.Content) == 0 {
		return uf, nil // empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return uf, fmt.Errorf("line %d: want a mapping with a users: list", top.Line)
	}
	if err := checkKeys(top, usersFileKeys, "at the top level"); err != nil {
		return uf, err
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		list := top.Content[i+1]
		if list.Kind != yaml.SequenceNode {
			if list.Tag == "!!null" {
				continue
			}
			return uf, fmt.Errorf("line %d: users: want a list of users", list.Line)
		}
		for _, u := range list.Content {
			if u.Kind != yaml.MappingNode {
				return uf, fmt.Errorf("line %d: a user is a mapping (name:, password_hash:, locks:, admin:)", u.Line)
			}
			if err := checkKeys(u, userKeys, "in a user"); err != nil {
				return uf, err
			}
		}
	}
	if err := top.Decode(&uf); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return uf, errors.New(strings.Join(te.Errors, "; ")) // "line 4: cannot unmarshal !!str `x` into bool"
		}
		return uf, err
	}
	return uf, nil
}

// checkKeys returns an error for the first key of mapping m not in known.
func checkKeys(m *yaml.Node, known []string, where string) error {
	for i := 0; i < len(m.Content); i += 2 {
		k := m.Content[i]
		if !slices.Contains(known, k.Value) {
			return fmt.Errorf("line %d: unknown field %q %s (known: %s)", k.Line, k.Value, where, strings.Join(known, ", "))
		}
	}
	return nil
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
		uf, err := parseUsersFile(raw)
		if err != nil {
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
