package inject

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// templateOf decodes a workload document (JSON or YAML) and returns its pod
// template as a pod.
func templateOf(t *testing.T, doc []byte) *corev1.Pod {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatal(err)
	}
	obj, template := workload(tm)
	if obj == nil {
		t.Fatalf("%s %s is not a workload", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatal(err)
	}
	meta, spec := template()
	return &corev1.Pod{ObjectMeta: *meta, Spec: *spec}
}

// listItems returns the items of a v1 List document as JSON.
func listItems(t *testing.T, doc []byte) [][]byte {
	t.Helper()
	var l corev1.List
	if err := yaml.UnmarshalStrict(doc, &l); err != nil {
		t.Fatal(err)
	}
	var items [][]byte
	for _, it := range l.Items {
		items = append(items, it.Raw)
	}
	return items
}

// TestInjectYAMLAllKinds: every supported kind in one stream is injected
// to the contract; the Service, ConfigMap, opted-out Deployment, empty and
// comment-only documents and every separator come out byte for byte; and
// a second pass over the output changes nothing.
func TestInjectYAMLAllKinds(t *testing.T) {
	in := readTestdata(t, "all-kinds.yaml")
	out, err := InjectYAML(in, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	inDocs, _ := splitDocuments(in)
	outDocs, err := splitDocuments(out)
	if err != nil {
		t.Fatalf("output does not split: %v", err)
	}
	want := []string{"same", "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
		"same", "same", "same", "same", "List", "same"}
	if len(inDocs) != len(want) || len(outDocs) != len(want) {
		t.Fatalf("%d documents in, %d out, want %d", len(inDocs), len(outDocs), len(want))
	}
	for i, w := range want {
		in, out := inDocs[i], outDocs[i]
		if !bytes.Equal(in.sep, out.sep) {
			t.Errorf("document %d: separator %q became %q", i+1, in.sep, out.sep)
		}
		switch w {
		case "same":
			if !bytes.Equal(in.body, out.body) {
				t.Errorf("document %d changed:\n%s\nbecame\n%s", i+1, in.body, out.body)
			}
		case "List":
			inItems, outItems := listItems(t, in.body), listItems(t, out.body)
			if len(outItems) != 2 {
				t.Fatalf("List has %d items, want 2", len(outItems))
			}
			checkInjected(t, templateOf(t, inItems[0]), templateOf(t, outItems[0]))
			var svcIn, svcOut any
			json.Unmarshal(inItems[1], &svcIn)
			json.Unmarshal(outItems[1], &svcOut)
			if !equalJSON(svcIn, svcOut) {
				t.Errorf("List's Service changed: %s became %s", inItems[1], outItems[1])
			}
		default:
			if !bytes.Contains(out.body, []byte("kind: "+w+"\n")) {
				t.Errorf("document %d is not the %s:\n%s", i+1, w, out.body)
			}
			checkInjected(t, templateOf(t, in.body), templateOf(t, out.body))
		}
	}
	again, err := InjectYAML(out, testConfig)
	if err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if !bytes.Equal(again, out) {
		t.Errorf("second pass changed the output:\n%s\nbecame\n%s", out, again)
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// TestInjectYAMLPassThrough: a stream with nothing to inject comes out
// exactly as it went in: CRLF line ends, a leading separator, separators
// with comments, no final newline, an opted-out Pod, a Deployment of an
// apiVersion it does not inject, and a sequence document.
func TestInjectYAMLPassThrough(t *testing.T) {
	in := "---\r\napiVersion: v1\r\nkind: Service\r\nmetadata: {name: a}\r\n--- # svc b\r\n" +
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: out\n  annotations: {weft.dev/inject: \"false\"}\nspec:\n  containers: [{name: a, image: a}]\n" +
		"---\napiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: old}\n" +
		"---\n- just\n- a list\n" +
		"---   \n\n\n---\n# end, without a newline"
	out, err := InjectYAML([]byte(in), testConfig)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("changed:\n%q\nbecame\n%q", in, out)
	}
}

// TestInjectYAMLErrors: a document that cannot be read, or that injecting
// would lose data of, fails the whole stream, naming the document.
func TestInjectYAMLErrors(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: a}]\n"
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"malformed yaml", pod + "---\n" + pod + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n",
			[]string{"document 3 (from line 13)", "yaml: line 15"}},
		{"tab indentation", "kind: Service\napiVersion: v1\nmetadata:\n\tname: x\n", []string{"document 1 (from line 1)"}},
		{"unknown field", pod + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicass: 3\n  template:\n    spec:\n      containers: [{name: a, image: a}]\n",
			[]string{"document 2 (from line 7)", "Deployment d", `unknown field "replicass"`}},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: three\n",
			[]string{"document 1", "Deployment d", "replicas"}},
		{"duplicate key", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: a}]\n  containers: [{name: b, image: b}]\n",
			[]string{"document 1", "line 6", "already set"}},
		{"bad separator", pod + "--- kind: Pod\n", []string{"line 6", "only a comment may follow"}},
		{"bad list item", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  spec: {containers: 3}\n",
			[]string{"document 1", "List item 0", "Pod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := InjectYAML([]byte(tc.in), testConfig)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if out != nil {
				t.Errorf("output along with the error: %q", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestInjectYAMLLenientPassThrough: documents it does not inject are not
// checked beyond being YAML: an unknown field in a Service or an opted-out
// Deployment is copied, not refused.
func TestInjectYAMLLenientPassThrough(t *testing.T) {
	in := "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {futureField: 1}\n---\n" +
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  futureField: 1\n  template:\n    metadata:\n      annotations: {weft.dev/inject: \"false\"}\n"
	out, err := InjectYAML([]byte(in), testConfig)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("changed:\n%s", out)
	}
}

// FuzzInjectYAML: any input is either refused or injected into an output
// that a second pass leaves unchanged; never a panic.
func FuzzInjectYAML(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: batch/v1, kind: Job}]\n---\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := InjectYAML(in, testConfig)
		if err != nil {
			return
		}
		again, err := InjectYAML(out, testConfig)
		if err != nil {
			t.Fatalf("second pass refused the first pass's output: %v\n%q", err, out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("second pass changed the output:\n%q\nbecame\n%q", out, again)
		}
	})
}
