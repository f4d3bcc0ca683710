package commands

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// User is one account of the users file (or the "default" user of
// --requirepass).
type User struct {
	Name string
	// PasswordHash is a bcrypt ("$2a$…", "$2b$…") or argon2id
	// ("$argon2id$v=19$m=…,t=…,p=…$salt$hash", base64 without padding) hash.
	PasswordHash string
	// Locks are glob patterns of the lock names the user may touch.
	Locks []string
	// Admin may FORCEUNLOCK, CLIENT KILL and CLIENT LIST, and sees all
	// locks. (CONFIG GET, which shows no secrets, is open to every user.)
	Admin bool

	// plain is --requirepass's password, compared by SHA-256 digest in
	// constant time (never set from a file).
	plain []byte
}

// NewRequirePassUser returns the "default" user that --requirepass
// defines: all locks, admin.
func NewRequirePassUser(pass string) User {
	sum := sha256.Sum256([]byte(pass))
	return User{Name: "default", Locks: []string{"*"}, Admin: true, plain: sum[:]}
}

// Validate checks a user from a users file.
func (u *User) Validate() error {
	if u.Name == "" {
		return errors.New("user without a name")
	}
	if strings.ContainsAny(u.Name, " \r\n") {
		return fmt.Errorf("user %q: the name may not contain spaces", u.Name)
	}
	switch {
	case u.plain != nil && u.PasswordHash == "":
		// --requirepass
	case strings.HasPrefix(u.PasswordHash, "$2a$"), strings.HasPrefix(u.PasswordHash, "$2b$"), strings.HasPrefix(u.PasswordHash, "$2y$"):
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return fmt.Errorf("user %q: bad bcrypt hash: %w", u.Name, err)
		}
	case strings.HasPrefix(u.PasswordHash, "$argon2id$"):
		if _, _, _, err := parseArgon2(u.PasswordHash); err != nil {
			return fmt.Errorf("user %q: bad argon2id hash: %w", u.Name, err)
		}
	case u.PasswordHash == "" && u.plain == nil:
		// Certificate-only user (--tls-auth-cn): no password login.
	default:
		return fmt.Errorf("user %q: password_hash must be bcrypt ($2a$, $2b$ or $2y$) or argon2id ($argon2id$)", u.Name)
	}
	if len(u.Locks) == 0 && !u.Admin {
		return fmt.Errorf("user %q: no lock patterns (locks: [...]) and not admin", u.Name)
	}
	return nil
}

// checkPassword reports whether pass is u's password, in time that does
// not depend on how much of it matches.
func (u *User) checkPassword(pass string) bool {
	if u.plain != nil {
		sum := sha256.Sum256([]byte(pass))
		return subtle.ConstantTimeCompare(sum[:], u.plain) == 1
	}
	switch {
	case strings.HasPrefix(u.PasswordHash, "$argon2id$"):
		p, salt, want, err := parseArgon2(u.PasswordHash)
		if err != nil {
			return false
		}
		got := argon2.IDKey([]byte(pass), salt, p.t, p.m, p.p, uint32(len(want)))
		return subtle.ConstantTimeCompare(got, want) == 1
	case u.PasswordHash != "":
		return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(pass)) == nil
	}
	return false
}

// mayLock reports whether the user may touch lock name.
func (u *User) mayLock(name string) bool {
	if u.Admin {
		return true
	}
	for _, p := range u.Locks {
		if globMatch(p, name) {
			return true
		}
	}
	return false
}

// userDB is the set of users in force; replaced whole on reload.
type userDB struct {
	byName map[string]*User
	// standIn is the user whose password check costs the most: a name
	// that is not a user is checked against its hash (and refused
	// whatever the result), so that timing does not tell which names
	// exist, and an unknown name costs no more than a known one.
	standIn *User
}

// users holds the *userDB in force; nil: no authentication.
type users struct{ p atomic.Pointer[userDB] }

func (u *users) set(list []User) error {
	if len(list) == 0 {
		u.p.Store(nil)
		return nil
	}
	db := &userDB{byName: make(map[string]*User, len(list))}
	for i := range list {
		usr := list[i]
		if err := usr.Validate(); err != nil {
			return err
		}
		if _, dup := db.byName[usr.Name]; dup {
			return fmt.Errorf("user %q defined twice", usr.Name)
		}
		db.byName[usr.Name] = &usr
		if db.standIn == nil || checkCost(&usr) > checkCost(db.standIn) {
			db.standIn = &usr
		}
	}
	u.p.Store(db)
	return nil
}

// SetUsers replaces the users in force (SIGHUP reload of --users-file).
// Connections stay open and keep their holds; each one's permissions are
// those of its user in the new set from its next command on (a removed
// user touches no lock: lock and admin commands get -NOPERM, LOCKS lists
// nothing).
func (s *Server) SetUsers(list []User) error {
	return s.users.set(list)
}

// authRequired reports whether connections must authenticate.
func (s *Server) authRequired() bool { return s.users.p.Load() != nil }

// lookupUser returns the user in force with that name, or nil.
func (s *Server) lookupUser(name string) *User {
	db := s.users.p.Load()
	if db == nil {
		return nil
	}
	return db.byName[name]
}

// checkCost ranks what checking a password of u costs: a plain
// (--requirepass) compare, then bcrypt by cost, argon2id by its time and
// memory.
func checkCost(u *User) uint64 {
	switch {
	case strings.HasPrefix(u.PasswordHash, "$argon2id$"):
		p, _, _, err := parseArgon2(u.PasswordHash)
		if err == nil {
			return 1<<32 + uint64(p.t)*uint64(p.m)
		}
	case u.PasswordHash != "":
		if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil {
			return 1 << uint(c)
		}
	}
	return 0
}

// standIn returns the user an unknown name is checked against (see
// userDB.standIn), or nil without users.
func (s *Server) standIn() *User {
	if db := s.users.p.Load(); db != nil {
		return db.standIn
	}
	return nil
}

// Bounds on argon2id parameters from a users file, so that a hash cannot
// make every AUTH allocate gigabytes or run for seconds.
const (
	maxArgon2Memory  = 1 << 20 // KiB: 1 GiB
	maxArgon2Time    = 16
	maxArgon2Threads = 16
)

type argon2Params struct {
	m, t uint32
	p    uint8
}
