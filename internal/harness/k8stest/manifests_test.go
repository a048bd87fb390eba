package k8stest

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kustomizations are the entry points of deploy/ a user applies, and what
// each must hold (kind/name).
var kustomizations = []struct {
	dir   string
	want  []string
	not   []string
	after string // applied first: what the kustomization needs installed
}{
	{
		dir:  "", // kubectl apply -k deploy/: both modes
		want: []string{"Namespace/weft-system", "DaemonSet/weft-agent", "Deployment/weft-injector", "MutatingWebhookConfiguration/weft-injector", "Service/weft-gossip"},
		not:  []string{"Deployment/weft-seed", "Job/weft-bench"},
	},
	{
		dir:  "overlays/host",
		want: []string{"Namespace/weft-system", "DaemonSet/weft-agent", "ClusterRole/weft-agent", "Service/weft-gossip"},
		not:  []string{"Deployment/weft-injector", "MutatingWebhookConfiguration/weft-injector"},
	},
	{
		dir:  "overlays/sidecar",
		want: []string{"Namespace/weft-system", "Deployment/weft-injector", "MutatingWebhookConfiguration/weft-injector", "Deployment/weft-seed", "Service/weft-gossip"},
		not:  []string{"DaemonSet/weft-agent", "ClusterRole/weft-agent"},
	},
	{
		dir:  "overlays/both",
		want: []string{"DaemonSet/weft-agent", "Deployment/weft-injector"},
		not:  []string{"Deployment/weft-seed"},
	},
	{
		dir:   "bench",
		want:  []string{"Pod/weft-bench-server", "Service/weft-bench-server", "Job/weft-bench"},
		after: "overlays/host",
	},
	{
		dir:  "uninstall",
		want: []string{"Namespace/weft-uninstall", "DaemonSet/weft-uninstall"},
		not:  []string{"DaemonSet/weft-agent"},
	},
}

func renderDeploy(t *testing.T, sub string) []*unstructured.Unstructured {
	t.Helper()
	deploy, err := DeployDir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(filepath.Join(deploy, sub))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func kindNames(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

// TestRenderDeploy renders every kustomization of deploy/ (no apiserver
// needed, so it runs in -short too) and checks what each holds: the modes
// are really separate, and no Secret is ever part of them.
func TestRenderDeploy(t *testing.T) {
	for _, k := range kustomizations {
		t.Run("deploy/"+k.dir, func(t *testing.T) {
			objs := renderDeploy(t, k.dir)
			got := kindNames(objs)
			for _, w := range k.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing %s; rendered %v", w, got)
				}
			}
			for _, n := range k.not {
				if slices.Contains(got, n) {
					t.Errorf("has %s, which this mode must not install", n)
				}
			}
			for _, o := range objs {
				if o.GetKind() == "Secret" {
					t.Errorf("renders Secret %s: keys are made by `weft keygen --k8s-secret`, never committed", o.GetName())
				}
				if ns := o.GetNamespace(); ns != "" && !strings.HasPrefix(ns, "weft-") {
					t.Errorf("%s/%s in namespace %q, want weft-system", o.GetKind(), o.GetName(), ns)
				}
			}
		})
	}
}

// TestManifestsApply: every object of every
// kustomization applies, server-side, to a real apiserver. Each
// kustomization gets a control plane of its own, as on a fresh cluster
// (the modes patch the same objects differently).
func TestManifestsApply(t *testing.T) {
	RequireBinaries(t)
	for _, k := range kustomizations {
		t.Run("deploy/"+k.dir, func(t *testing.T) {
			cp := Start(t)
			a, err := cp.NewApplier()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if k.after != "" {
				for _, o := range renderDeploy(t, k.after) {
					if _, err := a.Apply(ctx, o, "weft-test", false); err != nil {
						t.Fatalf("installing deploy/%s first: %v", k.after, err)
					}
					if o.GetKind() == "Namespace" {
						cp.DefaultServiceAccount(t, o.GetName())
					}
				}
			}
			objs := renderDeploy(t, k.dir)
			stored := map[string]string{}
			for _, o := range objs {
				got, err := a.Apply(ctx, o, "weft-test", false)
				if err != nil {
					t.Errorf("%v", err)
					continue
				}
				stored[o.GetKind()+"/"+o.GetName()] = got.GetResourceVersion()
				if o.GetKind() == "Namespace" {
					cp.DefaultServiceAccount(t, o.GetName())
				}
			}
			// Applying again is a no-op and conflicts with nothing: what
			// `kubectl apply -k` on an installed cluster does.
			for _, o := range objs {
				got, err := a.Apply(ctx, o, "weft-test", false)
				if err != nil {
					t.Errorf("second apply: %v", err)
					continue
				}
				if rv, ok := stored[o.GetKind()+"/"+o.GetName()]; ok && rv != got.GetResourceVersion() {
					t.Errorf("second apply of %s %s changed it (resourceVersion %s -> %s)", o.GetKind(), o.GetName(), rv, got.GetResourceVersion())
				}
			}
			// Nothing here runs the workloads' controllers, so admit each pod
			// template as a pod, dry run: it passes its namespace's Pod
			// Security level, service account and priority class checks.
			for _, o := range objs {
				pod, ok := podFromTemplate(t, o)
				if !ok {
					continue
				}
				if _, err := a.Apply(ctx, pod, "weft-test", true); err != nil {
					t.Errorf("pod of %s %s not admitted: %v", o.GetKind(), o.GetName(), err)
				}
			}
			t.Logf("%d objects applied: %s", len(objs), strings.Join(kindNames(objs), " "))
		})
	}
}

// podFromTemplate is the pod a workload's controller would create from
// its template.
func podFromTemplate(t *testing.T, o *unstructured.Unstructured) (*unstructured.Unstructured, bool) {
	t.Helper()
	switch o.GetKind() {
	case "DaemonSet", "Deployment", "Job", "StatefulSet":
	default:
		return nil, false
	}
	tmpl, found, err := unstructured.NestedMap(o.Object, "spec", "template")
	if err != nil || !found {
		t.Fatalf("%s %s: no pod template (%v)", o.GetKind(), o.GetName(), err)
	}
	pod := &unstructured.Unstructured{Object: tmpl}
	pod.SetAPIVersion("v1")
	pod.SetKind("Pod")
	pod.SetNamespace(o.GetNamespace())
	pod.SetName(o.GetName() + "-template")
	return pod, true
}
