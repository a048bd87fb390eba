package inject

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// testConfig is the injector configuration of the tests: not the
// defaults, so that a test sees where each value comes from.
var testConfig = Config{
	Image:           "registry.example/weft:v9.9.9",
	Join:            "weft-gossip.weft-system.svc:7946",
	GossipSecret:    "mesh-key",
	GossipSecretKey: "key",
	Version:         "v9.9.9",
}

// contractSidecar is the sidecar container of the contract with `weft
// sidecar`, written out independently of the code that builds it.
const contractSidecar = `
name: weft-sidecar
image: registry.example/weft:v9.9.9
args: [sidecar]
restartPolicy: Always
env:
- name: WEFT_POD_NAME
  valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.name}}
- name: WEFT_POD_NAMESPACE
  valueFrom: {fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}
- {name: WEFT_NODE_NAME, value: $(WEFT_POD_NAME).$(WEFT_POD_NAMESPACE)}
- {name: WEFT_JOIN, value: "weft-gossip.weft-system.svc:7946"}
- {name: WEFT_GOSSIP_KEY_FILE, value: /etc/weft/gossip/key}
- {name: WEFT_ANNOTATIONS_FILE, value: /etc/weft/podinfo/annotations}
- {name: WEFT_SOCKS_ADDR, value: "127.0.0.1:1080"}
- {name: WEFT_HTTP_PROXY_ADDR, value: "127.0.0.1:3128"}
- {name: WEFT_METRICS_ADDR, value: ":9464"}
ports:
- {name: weft-gossip, containerPort: 7946, protocol: TCP}
- {name: weft-gossip-u, containerPort: 7946, protocol: UDP}
- {name: weft-wg, containerPort: 51820, protocol: UDP}
- {name: weft-metrics, containerPort: 9464, protocol: TCP}
volumeMounts:
- {name: weft-gossip, mountPath: /etc/weft/gossip, readOnly: true}
- {name: weft-podinfo, mountPath: /etc/weft/podinfo, readOnly: true}
- {name: weft-state, mountPath: /var/lib/weft}
startupProbe:
  httpGet: {path: /healthz, port: 9464}
  periodSeconds: 1
  failureThreshold: 60
readinessProbe:
  httpGet: {path: /healthz, port: 9464}
livenessProbe:
  httpGet: {path: /healthz, port: 9464}
resources:
  requests: {cpu: 25m, memory: 48Mi}
  limits: {memory: 128Mi}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
`

// contractVolumes are the volumes of the contract, for testConfig.
const contractVolumes = `
- name: weft-gossip
  secret:
    secretName: mesh-key
    items: [{key: key, path: key}]
    defaultMode: 0444
- name: weft-podinfo
  downwardAPI:
    items: [{path: annotations, fieldRef: {apiVersion: v1, fieldPath: metadata.annotations}}]
- name: weft-state
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
`

var contractProxyEnv = map[string]string{
	"ALL_PROXY":   "socks5h://127.0.0.1:1080",
	"HTTP_PROXY":  "http://127.0.0.1:3128",
	"HTTPS_PROXY": "http://127.0.0.1:3128",
	"NO_PROXY":    "localhost,127.0.0.1,::1,.svc,.cluster.local",
}

// valueCmp compares what a typed pod holds by value, not by how it was
// written: resource quantities, the raw JSON of managed fields, and empty
// lists as absent ones.
var valueCmp = cmp.Options{
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 }),
	cmp.Comparer(func(a, b metav1.FieldsV1) bool {
		var ca, cb bytes.Buffer
		return json.Compact(&ca, a.Raw) == nil && json.Compact(&cb, b.Raw) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
	}),
}

// checkInjected fails t unless the pod (template) injected from orig holds
// everything the contract says and orig's own content, in order.
func checkInjected(t *testing.T, orig, got *corev1.Pod) {
	t.Helper()
	var wantSidecar corev1.Container
	if err := yaml.UnmarshalStrict([]byte(contractSidecar), &wantSidecar); err != nil {
		t.Fatal(err)
	}
	var wantVolumes []corev1.Volume
	if err := yaml.UnmarshalStrict([]byte(contractVolumes), &wantVolumes); err != nil {
		t.Fatal(err)
	}
	if v := got.Annotations[AnnotationInjected]; v != testConfig.Version {
		t.Errorf("annotation %s = %q, want %q", AnnotationInjected, v, testConfig.Version)
	}
	for k, v := range orig.Annotations {
		if got.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want it kept as %q", k, got.Annotations[k], v)
		}
	}
	if len(got.Spec.InitContainers) == 0 || got.Spec.InitContainers[0].Name != SidecarName {
		t.Fatalf("first init container is not %s: %v", SidecarName, names(got.Spec.InitContainers))
	}
	if d := cmp.Diff(wantSidecar, got.Spec.InitContainers[0], valueCmp); d != "" {
		t.Errorf("sidecar container (-contract +got):\n%s", d)
	}
	if d := cmp.Diff(orig.Spec.InitContainers, got.Spec.InitContainers[1:], valueCmp); d != "" {
		t.Errorf("the pod's own init containers changed (-orig +got):\n%s", d)
	}
	wantAllVolumes := append([]corev1.Volume{}, orig.Spec.Volumes...)
	for _, v := range wantVolumes {
		if !slices.ContainsFunc(orig.Spec.Volumes, func(o corev1.Volume) bool { return o.Name == v.Name }) {
			wantAllVolumes = append(wantAllVolumes, v)
		}
	}
	if d := cmp.Diff(wantAllVolumes, got.Spec.Volumes, valueCmp); d != "" {
		t.Errorf("volumes: want the pod's own, then the contract's it lacks (-want +got):\n%s", d)
	}
	if len(got.Spec.Containers) != len(orig.Spec.Containers) {
		t.Fatalf("containers: %v, want %v", names(got.Spec.Containers), names(orig.Spec.Containers))
	}
	for i, c := range got.Spec.Containers {
		o := orig.Spec.Containers[i]
		if len(c.Env) < len(o.Env) || !cmp.Equal(o.Env, c.Env[:len(o.Env)], valueCmp) {
			t.Errorf("container %s: its own env %v is not kept in front of %v", c.Name, o.Env, c.Env)
			continue
		}
		own := map[string]bool{}
		for _, e := range o.Env {
			own[e.Name] = true
		}
		seen := map[string]int{}
		for _, e := range c.Env {
			seen[e.Name]++
			if want, ok := contractProxyEnv[e.Name]; ok && !own[e.Name] && e.Value != want {
				t.Errorf("container %s: %s = %q, want %q", c.Name, e.Name, e.Value, want)
			}
		}
		for name := range contractProxyEnv {
			if seen[name] != 1 {
				t.Errorf("container %s: %s set %d times, want once", c.Name, name, seen[name])
			}
		}
		c.Env, o.Env = nil, nil
		if d := cmp.Diff(o, c, valueCmp); d != "" {
			t.Errorf("container %s changed beyond env (-orig +got):\n%s", c.Name, d)
		}
	}
	origRest, gotRest := orig.DeepCopy(), got.DeepCopy()
	for _, p := range []*corev1.Pod{origRest, gotRest} {
		p.Spec.InitContainers, p.Spec.Containers, p.Spec.Volumes = nil, nil, nil
		delete(p.Annotations, AnnotationInjected)
		if len(p.Annotations) == 0 {
			p.Annotations = nil
		}
	}
	if d := cmp.Diff(origRest, gotRest, valueCmp); d != "" {
		t.Errorf("pod changed beyond containers, volumes and the injected annotation (-orig +got):\n%s", d)
	}
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

// TestInjectPodTemplate: InjectPod on a bare pod template adds the contract
// and a second InjectPod changes nothing.
func TestInjectPodTemplate(t *testing.T) {
	orig := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationExpose: "8080"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "app:1", Env: []corev1.EnvVar{{Name: "NO_PROXY", Value: "internal"}}},
		}},
	}
	got := orig.DeepCopy()
	changed, err := InjectPod(&got.ObjectMeta, &got.Spec, testConfig)
	if err != nil || !changed {
		t.Fatalf("InjectPod = %v, %v; want true, nil", changed, err)
	}
	checkInjected(t, orig, got)
	if v := got.Spec.Containers[0].Env[0]; v.Value != "internal" {
		t.Errorf("the app's own NO_PROXY became %q", v.Value)
	}
	again := got.DeepCopy()
	if changed, err := InjectPod(&again.ObjectMeta, &again.Spec, testConfig); err != nil || changed {
		t.Fatalf("second InjectPod = %v, %v; want false, nil", changed, err)
	}
	if d := cmp.Diff(got, again); d != "" {
		t.Errorf("second InjectPod changed the pod:\n%s", d)
	}
}

// TestWanted: the opt-in rules of the contract.
func TestWanted(t *testing.T) {
	labelled := map[string]string{LabelInject: LabelInjectEnabled}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		annot  map[string]string
		want   bool
	}{
		{"nothing", nil, nil, false},
		{"namespace label", labelled, nil, true},
		{"namespace label other value", map[string]string{LabelInject: "disabled"}, nil, false},
		{"annotation true", nil, map[string]string{AnnotationInject: "true"}, true},
		{"annotation false in labelled namespace", labelled, map[string]string{AnnotationInject: "false"}, false},
		{"annotation garbage defers to label", labelled, map[string]string{AnnotationInject: "yes please"}, true},
		{"annotation garbage alone", nil, map[string]string{AnnotationInject: "yes please"}, false},
	} {
		if got := Wanted(tc.labels, tc.annot); got != tc.want {
			t.Errorf("%s: Wanted = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestConfigValidate: a config missing a value is refused by every entry
// point, naming what is missing.
func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	c := testConfig
	c.Image = ""
	if _, err := InjectPod(&metav1.ObjectMeta{}, &corev1.PodSpec{}, c); err == nil {
		t.Error("InjectPod without an image: no error")
	}
	if _, err := InjectYAML([]byte("kind: Pod\napiVersion: v1\n"), c); err == nil {
		t.Error("InjectYAML without an image: no error")
	}
	if _, err := NewWebhook(c, nil, nil); err == nil {
		t.Error("NewWebhook without an image: no error")
	}
}
