package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// injectInput has every kind `weft inject` injects, a Service and a
// comment-only document that must pass through.
const injectInput = `# manifests of the shop
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers: [{name: app, image: app:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: api:1}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: db:1}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logs}
spec:
  selector: {matchLabels: {app: logs}}
  template:
    metadata: {labels: {app: logs}}
    spec:
      containers: [{name: logs, image: logs:1}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: rs, image: rs:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: once:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: nightly, image: nightly:1}]
---
apiVersion: v1
kind: Service
metadata: {name: api}   # kept as written
spec:
  ports: [{port: 80, targetPort: 8080}]
---
# nothing but a comment
`

// runWeft runs the weft command line in-process, as main does, with stdin.
func runWeft(t *testing.T, stdin string, args ...string) (stdout string, err error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.ExecuteContext(context.Background())
	return out.String(), err
}

// podSpecOf returns the pod spec of a workload document, by kind.
func podSpecOf(t *testing.T, doc map[string]any) map[string]any {
	t.Helper()
	get := func(m map[string]any, path ...string) map[string]any {
		for _, p := range path {
			next, ok := m[p].(map[string]any)
			if !ok {
				t.Fatalf("%s %v: no %s in %v", doc["kind"], path, p, m)
			}
			m = next
		}
		return m
	}
	switch doc["kind"] {
	case "Pod":
		return get(doc, "spec")
	case "CronJob":
		return get(doc, "spec", "jobTemplate", "spec", "template", "spec")
	}
	return get(doc, "spec", "template", "spec")
}

// TestInjectCommand: `weft inject -f FILE` and `-f -` print the same
// manifests with the sidecar (image and join from the flags) in every
// workload; the Service and comment documents come out as written; and
// running it over its own output prints that output again.
func TestInjectCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "shop.yaml")
	if err := os.WriteFile(file, []byte(injectInput), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--image", "registry.example/weft:v1", "--join", "gossip.mesh:7946", "--gossip-secret", "mesh-key"}
	fromFile, err := runWeft(t, "", append([]string{"inject", "-f", file}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	fromStdin, err := runWeft(t, injectInput, append([]string{"inject", "-f", "-"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	if fromFile != fromStdin {
		t.Errorf("-f FILE and -f - differ:\n%s\n---- vs ----\n%s", fromFile, fromStdin)
	}

	if !strings.HasPrefix(fromFile, "# manifests of the shop\n---\n") {
		t.Errorf("leading comment document not kept:\n%s", fromFile)
	}
	if !strings.HasSuffix(fromFile, "---\n# nothing but a comment\n") {
		t.Errorf("trailing comment document not kept:\n%s", fromFile)
	}
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: api}   # kept as written\nspec:\n  ports: [{port: 80, targetPort: 8080}]\n"
	if !strings.Contains(fromFile, "---\n"+svc+"---\n") {
		t.Errorf("Service not kept byte for byte:\n%s", fromFile)
	}

	kinds := map[string]bool{}
	for i, text := range strings.Split(fromFile, "\n---\n") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatalf("output document %d: %v", i+1, err)
		}
		kind, _ := doc["kind"].(string)
		if doc == nil || kind == "Service" {
			continue
		}
		kinds[kind] = true
		spec := podSpecOf(t, doc)
		inits, _ := spec["initContainers"].([]any)
		if len(inits) == 0 {
			t.Errorf("%s: no init containers", kind)
			continue
		}
		sc := inits[0].(map[string]any)
		if sc["name"] != "weft-sidecar" || sc["image"] != "registry.example/weft:v1" || sc["restartPolicy"] != "Always" {
			t.Errorf("%s: first init container %v %v %v, want weft-sidecar registry.example/weft:v1 Always",
				kind, sc["name"], sc["image"], sc["restartPolicy"])
		}
		if !strings.Contains(text, "value: gossip.mesh:7946") || !strings.Contains(text, "secretName: mesh-key") {
			t.Errorf("%s: --join or --gossip-secret not used:\n%s", kind, text)
		}
		app := spec["containers"].([]any)[0].(map[string]any)
		if !strings.Contains(toYAML(t, app["env"]), "socks5h://127.0.0.1:1080") {
			t.Errorf("%s: app container has no ALL_PROXY", kind)
		}
	}
	for _, k := range []string{"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"} {
		if !kinds[k] {
			t.Errorf("no injected %s in the output", k)
		}
	}

	again, err := runWeft(t, fromFile, append([]string{"inject", "-f", "-"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	if again != fromFile {
		t.Errorf("second pass changed the output:\n%s\n---- became ----\n%s", fromFile, again)
	}
}

func toYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInjectCommandErrors: unreadable input fails with a message naming
// what and where, and nothing on stdout, not even the documents before the
// bad one.
func TestInjectCommandErrors(t *testing.T) {
	bad := injectInput + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n"
	badLine := strings.Count(injectInput, "\n") + 2 // the line after the separator
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  []string
	}{
		{"malformed document", bad, []string{"inject", "-f", "-"}, []string{"inject stdin",
			fmt.Sprintf("document 11 (from line %d)", badLine), fmt.Sprintf("yaml: line %d:", badLine+2)}},
		{"no -f", "", []string{"inject"}, []string{"-f FILE"}},
		{"missing file", "", []string{"inject", "-f", filepath.Join(t.TempDir(), "nope.yaml")}, []string{"nope.yaml", "no such file"}},
		{"empty image", injectInput, []string{"inject", "-f", "-", "--image", ""}, []string{"no sidecar image"}},
		{"serve without tls dir", "", []string{"inject", "serve"}, []string{"--tls-dir is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runWeft(t, tc.stdin, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if out != "" {
				t.Errorf("printed on stdout: %q", out)
			}
		})
	}
}
