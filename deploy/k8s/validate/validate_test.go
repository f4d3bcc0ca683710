// Package validate checks the Kubernetes manifests in deploy/k8s against
// the Kubernetes API types (k8s.io/api): each document is decoded strictly
// into its kind's Go type, so an unknown or misspelled field, a wrong type
// or a duplicate key fails, and then checked for what relock needs
// (selectors that select, probes on /healthz and /readyz, Secrets mounted
// where the config file looks, flags relock knows). It is a module of its
// own so that relock's go.mod does not carry k8s.io/api.
package validate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// newObject returns an empty object of the document's kind.
func newObject(tm metav1.TypeMeta) (any, bool) {
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	}
	return nil, false
}

// loadManifests decodes every document of file strictly.
func loadManifests(t *testing.T, file string) []any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", file))
	if err != nil {
		t.Fatal(err)
	}
	var objs []any
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: document %d: %v", file, i+1, err)
		}
		obj, ok := newObject(tm)
		if !ok {
			t.Fatalf("%s: document %d: apiVersion %q kind %q: not a type this validator knows", file, i+1, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: document %d (%s): %v", file, i+1, tm.Kind, err)
		}
		if m := objectMeta(obj); m.Name == "" {
			t.Errorf("%s: document %d (%s) has no metadata.name", file, i+1, tm.Kind)
		}
		objs = append(objs, obj)
	}
	return objs
}

func objectMeta(obj any) metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		return o.ObjectMeta
	case *corev1.Secret:
		return o.ObjectMeta
	case *corev1.Service:
		return o.ObjectMeta
	case *appsv1.StatefulSet:
		return o.ObjectMeta
	case *appsv1.Deployment:
		return o.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return o.ObjectMeta
	case *networkingv1.NetworkPolicy:
		return o.ObjectMeta
	}
	return metav1.ObjectMeta{}
}

func only[T any](t *testing.T, objs []any, what string) []T {
	t.Helper()
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// selects reports whether sel (a matchLabels map) selects pods labelled l.
func selects(sel map[string]string, l map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(l))
}

// checkPod checks what every relock pod template needs: a container named
// relock whose probes hit /healthz and /readyz on a declared port, mounts
// of declared volumes, and $(VAR) references to variables declared before.
func checkPod(t *testing.T, where string, spec corev1.PodSpec, claims []corev1.PersistentVolumeClaim) corev1.Container {
	t.Helper()
	var relock *corev1.Container
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for i := range all {
		if all[i].Name == "relock" {
			relock = &all[i]
		}
	}
	if relock == nil {
		t.Fatalf("%s: no container named relock", where)
	}
	c := *relock
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	probe := func(kind string, p *corev1.Probe, path string) {
		switch {
		case p == nil:
			t.Errorf("%s: relock has no %s probe", where, kind)
		case p.HTTPGet == nil:
			t.Errorf("%s: relock's %s probe is not an HTTP GET", where, kind)
		case p.HTTPGet.Path != path:
			t.Errorf("%s: relock's %s probe asks %s, want %s", where, kind, p.HTTPGet.Path, path)
		case p.HTTPGet.Port.StrVal != "" && !ports[p.HTTPGet.Port.StrVal]:
			t.Errorf("%s: relock's %s probe names port %q, which the container does not declare", where, kind, p.HTTPGet.Port.StrVal)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")

	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = true
	}
	for _, pvc := range claims {
		vols[pvc.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !vols[m.Name] {
			t.Errorf("%s: relock mounts volume %q, which the pod does not declare", where, m.Name)
		}
	}
	declared := map[string]bool{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	checkRefs := func(what, s string) {
		for _, m := range ref.FindAllStringSubmatch(s, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: relock's %s uses $(%s), not declared before it in env", where, what, m[1])
			}
		}
	}
	for _, e := range c.Env {
		checkRefs("env "+e.Name, e.Value)
		declared[e.Name] = true
	}
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		checkRefs("args", a)
	}
	return c
}

func TestK8s_SharedCluster(t *testing.T) {
	objs := loadManifests(t, "relock.yaml")
	sets := only[*appsv1.StatefulSet](t, objs, "StatefulSet")
	if len(sets) != 1 {
		t.Fatalf("relock.yaml: %d StatefulSets, want 1", len(sets))
	}
	sts := sets[0]
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("StatefulSet replicas %v, want 3", sts.Spec.Replicas)
	}
	podLabels := sts.Spec.Template.Labels
	if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		t.Error("StatefulSet selector does not select its pod template")
	}
	c := checkPod(t, "StatefulSet "+sts.Name, sts.Spec.Template.Spec, sts.Spec.VolumeClaimTemplates)

	// Services: a headless one named by serviceName, published before
	// ready; a client one; both select the pods.
	var headless, client bool
	for _, svc := range only[*corev1.Service](t, objs, "Service") {
		if !selects(svc.Spec.Selector, podLabels) {
			t.Errorf("Service %s does not select the relock pods", svc.Name)
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			if svc.Name != sts.Spec.ServiceName {
				t.Errorf("headless Service %s is not the StatefulSet's serviceName %q", svc.Name, sts.Spec.ServiceName)
			}
			if !svc.Spec.PublishNotReadyAddresses {
				t.Errorf("headless Service %s: publishNotReadyAddresses is off; members could not find each other before they are ready", svc.Name)
			}
			headless = true
		} else {
			client = true
		}
	}
	if !headless || !client {
		t.Errorf("relock.yaml: headless Service %v, client Service %v; want both", headless, client)
	}

	pdbs := only[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	if len(pdbs) != 1 || pdbs[0].Spec.Selector == nil || !selects(pdbs[0].Spec.Selector.MatchLabels, podLabels) {
		t.Error("relock.yaml: want one PodDisruptionBudget selecting the relock pods")
	} else if mu := pdbs[0].Spec.MaxUnavailable; mu == nil || mu.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1 (two of three keep a quorum)", mu)
	}

	// The config file: from the ConfigMap, and its secrets from Secrets.
	var relockYAML string
	for _, cm := range only[*corev1.ConfigMap](t, objs, "ConfigMap") {
		if s, ok := cm.Data["relock.yaml"]; ok {
			relockYAML = s
		}
	}
	if relockYAML == "" {
		t.Fatal("relock.yaml: no ConfigMap with a relock.yaml key")
	}
	var cfg map[string]any
	if err := yaml.UnmarshalStrict([]byte(relockYAML), &cfg); err != nil {
		t.Fatalf("ConfigMap relock.yaml: %v", err)
	}
	secretMounts := map[string]string{} // mount path -> secret
	volSecret := map[string]string{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			volSecret[v.Name] = v.Secret.SecretName
		}
	}
	for _, m := range c.VolumeMounts {
		if s, ok := volSecret[m.Name]; ok {
			secretMounts[m.MountPath] = s
		}
	}
	inSecret := func(key string) {
		p, _ := cfg[key].(string)
		for dir, secret := range secretMounts {
			if strings.HasPrefix(p, dir+"/") {
				t.Logf("%s %s: from Secret %s", key, p, secret)
				return
			}
		}
		t.Errorf("ConfigMap relock.yaml: %s %q is not in a mounted Secret", key, p)
	}
	for _, k := range []string{"users-file", "raft-tls-cert", "raft-tls-key", "raft-tls-ca"} {
		inSecret(k)
	}

	// relock itself parses the config file and the args (with the
	// downward-API variables filled in): a usage error (exit 2: unknown
	// key or flag, bad value) fails; failing later, on the missing
	// Secret files, is expected here.
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relock.yaml")
	if err := os.WriteFile(cfgPath, []byte(relockYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"server"}
	for _, a := range c.Args {
		a = strings.NewReplacer("$(POD_NAME)", "relock-0", "$(POD_IP)", "127.0.0.1").Replace(a)
		if strings.HasPrefix(a, "--config=") {
			a = "--config=" + cfgPath
		}
		args = append(args, a)
	}
	out, code := runRelock(t, args, "RELOCK_LISTEN=127.0.0.1:0", "RELOCK_METRICS_LISTEN=127.0.0.1:0")
	if code == 2 || strings.Contains(out, "config file") || code == 0 {
		t.Errorf("relock %s: exit %d:\n%s", strings.Join(args, " "), code, out)
	}
	if !strings.Contains(out, "users") {
		t.Errorf("relock %s: exit %d, want it to get as far as reading the users file:\n%s", strings.Join(args, " "), code, out)
	}

	if len(only[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")) == 0 {
		t.Error("relock.yaml: no NetworkPolicy guarding the Raft port")
	}
}

func TestK8s_Sidecar(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?i)locks are local to its pod`).Match(raw) {
		t.Error("sidecar.yaml: its comment does not say that a sidecar's locks are local to its pod")
	}
	objs := loadManifests(t, "sidecar.yaml")
	deps := only[*appsv1.Deployment](t, objs, "Deployment")
	if len(deps) != 1 {
		t.Fatalf("sidecar.yaml: %d Deployments, want 1", len(deps))
	}
	d := deps[0]
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Error("Deployment selector does not select its pod template")
	}
	c := checkPod(t, "Deployment "+d.Name, d.Spec.Template.Spec, nil)
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("sidecar.yaml: relock is not a native sidecar (an init container with restartPolicy: Always)")
	}
	for _, e := range c.Env {
		if e.Name == "RELOCK_LISTEN" {
			t.Errorf("sidecar.yaml: RELOCK_LISTEN=%q: a sidecar's lock port stays on the image's loopback", e.Value)
		}
	}
}

var relockBin string

// runRelock builds relock once and runs it with args and extra
// environment variables for at most 20 s, returning its output and exit
// status.
func runRelock(t *testing.T, args []string, env ...string) (string, int) {
	t.Helper()
	if relockBin == "" {
		bin := filepath.Join(t.TempDir(), "relock")
		build := exec.Command("go", "build", "-o", bin, "./cmd/relock")
		build.Dir = filepath.Join("..", "..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/relock: %v\n%s", err, out)
		}
		relockBin = bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relockBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("relock: %v", err)
	return "", -1
}
