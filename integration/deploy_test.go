package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// systemdUnit is a unit file as section -> key -> values (a key may
// repeat: LoadCredential=).
type systemdUnit map[string]map[string][]string

func readSystemdUnit(t testing.TB, path string) systemdUnit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := systemdUnit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u systemdUnit) one(t testing.TB, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("relock.service: [%s] %s= set %d times, want once", section, key, len(vs))
	}
	return vs[0]
}

// TestDeploy_SystemdUnitWorksAsShipped checks deploy/relock.service and
// deploy/relock.yaml together: the service runs as a DynamicUser, so every
// secret it reads (users file, TLS key) must come through LoadCredential=
// (a root-only 0600 file is unreadable to it otherwise); systemd-analyze
// verify accepts the unit; and the unit's ExecStart, with the shipped
// config file and credentials in a directory standing for %d, starts a
// server that serves TLS clients who log in as a user of the file.
func TestDeploy_SystemdUnitWorksAsShipped(t *testing.T) {
	unitPath := filepath.Join("..", "deploy", "relock.service")
	u := readSystemdUnit(t, unitPath)
	if u.one(t, "Service", "DynamicUser") != "yes" {
		t.Fatal("relock.service: DynamicUser is not yes; this test assumes it")
	}
	creds := map[string]string{} // credential name -> source
	for _, lc := range u["Service"]["LoadCredential"] {
		name, src, ok := strings.Cut(lc, ":")
		if !ok || name == "" || !filepath.IsAbs(src) {
			t.Errorf("relock.service: LoadCredential=%s: want NAME:/absolute/path", lc)
		}
		creds[name] = src
	}
	exec0 := u.one(t, "Service", "ExecStart")
	args := strings.Fields(exec0)
	if len(args) < 2 || args[0] != "/usr/local/bin/relock" || args[1] != "server" {
		t.Fatalf("relock.service: ExecStart=%s: want /usr/local/bin/relock server …", exec0)
	}
	flags := map[string]string{}
	for i := 2; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "--") && !strings.HasPrefix(args[i+1], "--") {
			flags[args[i]] = args[i+1]
		}
	}
	if flags["--config"] != "/etc/relock/relock.yaml" {
		t.Errorf("relock.service: --config %q, want /etc/relock/relock.yaml (deploy/relock.yaml)", flags["--config"])
	}
	// Secrets come from %d, each a credential the unit loads.
	for _, f := range []string{"--users-file", "--tls-cert", "--tls-key"} {
		v, ok := flags[f]
		name, isCred := strings.CutPrefix(v, "%d/")
		switch {
		case !ok:
			t.Errorf("relock.service: ExecStart has no %s", f)
		case !isCred:
			t.Errorf("relock.service: %s %s: a DynamicUser cannot read a root-only file; use %%d/NAME with LoadCredential=NAME:…", f, v)
		case creds[name] == "":
			t.Errorf("relock.service: %s %s: no LoadCredential=%s:…", f, v, name)
		}
	}
	if creds["users.yaml"] != "/etc/relock/users.yaml" {
		t.Errorf("relock.service: LoadCredential of users.yaml from %q, want /etc/relock/users.yaml (as README says)", creds["users.yaml"])
	}

	// systemd's own checker, on a copy whose ExecStart names the binary
	// under test (verify wants an executable there).
	if sa, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: unit checked by the parser above only")
	} else {
		raw, err := os.ReadFile(unitPath)
		if err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(relockBin)
		cp := filepath.Join(t.TempDir(), "relock.service")
		text := strings.ReplaceAll(string(raw), "ExecStart=/usr/local/bin/relock ", "ExecStart="+abs+" ")
		if err := os.WriteFile(cp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runBounded(exec.Command(sa, "verify", cp), 60*time.Second)
		// verify also reports on units this one names (network-online
		// target and friends) that a container may lack; keep only what
		// it says about relock.service.
		var own []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "relock.service") {
				own = append(own, l)
			}
		}
		if len(own) > 0 {
			t.Errorf("systemd-analyze verify relock.service (%v):\n%s", err, strings.Join(own, "\n"))
		}
	}

	// ExecStart as systemd would run it: %d is the credentials directory.
	credDir := t.TempDir()
	certs := makeTestCerts(t)
	copyFile(t, certs.serverCert, filepath.Join(credDir, "tls.pem"))
	copyFile(t, certs.serverKey, filepath.Join(credDir, "tls-key.pem"))
	writeUsersFile(t, filepath.Join(credDir, "users.yaml"),
		userEntry{name: "app", hash: bcryptHash(t, "app-pass"), locks: []string{"app:*"}})
	var run []string
	for i := 2; i < len(args); i++ {
		a := strings.ReplaceAll(args[i], "%d", credDir)
		switch {
		case a == "/etc/relock/relock.yaml":
			a = filepath.Join("..", "deploy", "relock.yaml")
		case a == "/var/lib/relock":
			a = t.TempDir()
		case a == "--log-format": // the harness sets it
			i++
			continue
		}
		run = append(run, a)
	}
	if strings.Contains(strings.Join(run, " "), "%") {
		t.Fatalf("ExecStart has a specifier this test does not stand in for: %v", run)
	}
	// The harness's --listen 127.0.0.1:0 wins over relock.yaml's listen
	// (flags over the file), and so does --metrics-listen.
	srv := startServer(t, append(run, "--metrics-listen", "127.0.0.1:0")...)
	c := srv.client(t, tlsOpts(certs), asUser("app", "app-pass"))
	key := mustLock(t, c, "LOCK", "app:deploy")
	mustUnlock(t, c, "app:deploy", key)
	if code, body := opsGet(t, opsMetricsAddr(t, srv), "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
}

// TestDeploy_ConfigFileHasNoSecretsAndPrivateMetrics: deploy/relock.yaml
// is installed 0644, readable by the DynamicUser, so it must not name a
// password or a key; its metrics address stays on loopback.
func TestDeploy_ConfigFileHasNoSecretsAndPrivateMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "relock.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"requirepass", "users-file", "tls-key", "raft-tls-key"} {
		if regexp.MustCompile(`(?m)^` + key + `\s*:`).Match(raw) {
			t.Errorf("deploy/relock.yaml sets %s: secrets go through LoadCredential in the unit", key)
		}
	}
	if !regexp.MustCompile(`(?m)^metrics-listen:\s*127\.0\.0\.1:`).Match(raw) {
		t.Error("deploy/relock.yaml: metrics-listen is not on 127.0.0.1")
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDeploy_DockerfileKeepsMetricsPrivate: the image serves /metrics (no
// authentication) on loopback unless told otherwise, and the build context
// leaves out bin/ and .git.
func TestDeploy_DockerfileKeepsMetricsPrivate(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(raw), " ")
	var metrics []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, m := range regexp.MustCompile(`RELOCK_METRICS_LISTEN=(\S+)`).FindAllStringSubmatch(line, -1) {
			metrics = append(metrics, m[1])
		}
		for _, m := range regexp.MustCompile(`"--metrics-listen",\s*"([^"]*)"`).FindAllStringSubmatch(line, -1) {
			metrics = append(metrics, m[1])
		}
		if strings.Contains(line, "--metrics-listen=") {
			t.Errorf("Dockerfile: %q: this test reads --metrics-listen ADDR or RELOCK_METRICS_LISTEN only", line)
		}
	}
	if len(metrics) == 0 {
		t.Error("Dockerfile sets no metrics address")
	}
	for _, addr := range metrics {
		if !strings.HasPrefix(addr, "127.0.0.1:") && !strings.HasPrefix(addr, "[::1]:") && !strings.HasPrefix(addr, "localhost:") {
			t.Errorf("Dockerfile: metrics on %q, not loopback (README: keep them private)", addr)
		}
	}

	ignore, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(ignore), "\n") {
		have[strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "/"), "/")] = true
	}
	for _, want := range []string{"bin", ".git", "bench/tmp"} {
		if !have[want] {
			t.Errorf(".dockerignore does not list %s/", want)
		}
	}
}
