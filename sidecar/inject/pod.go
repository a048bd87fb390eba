package inject

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The fixed parts of the sidecar contract: `weft sidecar` reads these
// variables, files and ports.
const (
	volGossip  = "weft-gossip"
	volPodinfo = "weft-podinfo"
	volState   = "weft-state"

	gossipDir  = "/etc/weft/gossip"
	podinfoDir = "/etc/weft/podinfo"
	stateDir   = "/var/lib/weft"

	socksAddr     = "127.0.0.1:1080"
	httpProxyAddr = "127.0.0.1:3128"
	metricsPort   = 9464
	gossipPort    = 7946
	wireguardPort = 51820

	// sidecarUID is the "nonroot" user of distroless images.
	sidecarUID = 65532
)

// proxyEnv is what every app container gets unless it sets the variable
// itself. socks5h: names are resolved by the proxy, i.e. in the mesh.
var proxyEnv = []corev1.EnvVar{
	{Name: "ALL_PROXY", Value: "socks5h://" + socksAddr},
	{Name: "HTTP_PROXY", Value: "http://" + httpProxyAddr},
	{Name: "HTTPS_PROXY", Value: "http://" + httpProxyAddr},
	{Name: "NO_PROXY", Value: "localhost,127.0.0.1,::1,.svc,.cluster.local"},
}

// Wanted says whether a pod with podAnnotations, in a namespace labelled
// nsLabels, opts in to injection: its annotation weft.dev/inject decides
// when it is "true" or "false", the namespace label otherwise.
func Wanted(nsLabels, podAnnotations map[string]string) bool {
	if want, ok := annotationSays(podAnnotations); ok {
		return want
	}
	return nsLabels[LabelInject] == LabelInjectEnabled
}

// annotationSays reports the answer of the pod annotation weft.dev/inject,
// when it gives one.
func annotationSays(podAnnotations map[string]string) (want, ok bool) {
	switch strings.ToLower(strings.TrimSpace(podAnnotations[AnnotationInject])) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// optedOut says whether the pod annotation alone says no; it is all the
// offline injector can know.
func optedOut(podAnnotations map[string]string) bool {
	want, ok := annotationSays(podAnnotations)
	return ok && !want
}

// Injected says whether a pod (template) already has the sidecar: it carries
// the weft.dev/injected annotation, or a container or init container named
// weft-sidecar (added by hand or by an older injector).
func Injected(meta *metav1.ObjectMeta, spec *corev1.PodSpec) bool {
	if _, ok := meta.Annotations[AnnotationInjected]; ok {
		return true
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if c.Name == SidecarName {
				return true
			}
		}
	}
	return false
}

// InjectPod adds the sidecar to the pod (template) meta+spec in place,
// unless it is Injected already, and reports whether it changed anything.
// It does not ask whether the pod wants it (see Wanted).
func InjectPod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, cfg Config) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	if Injected(meta, spec) {
		return false, nil
	}
	planInjection(meta, spec, cfg).apply(meta, spec)
	return true, nil
}

// injection is what injecting adds to one pod. It is computed once and then
// either applied to typed objects (offline) or turned into a JSONPatch
// (webhook), so both paths add exactly the same things.
type injection struct {
	version string
	sidecar corev1.Container
	volumes []corev1.Volume // the missing ones, in contract order
	env     []containerEnv  // only containers that miss something
}

type containerEnv struct {
	index int
	vars  []corev1.EnvVar
}

func planInjection(meta *metav1.ObjectMeta, spec *corev1.PodSpec, cfg Config) injection {
	inj := injection{version: cfg.Version, sidecar: sidecarContainer(cfg)}
	have := map[string]bool{}
	for _, v := range spec.Volumes {
		have[v.Name] = true
	}
	for _, v := range sidecarVolumes(cfg) {
		if !have[v.Name] {
			inj.volumes = append(inj.volumes, v)
		}
	}
	for i, c := range spec.Containers {
		set := map[string]bool{}
		for _, e := range c.Env {
			set[e.Name] = true
		}
		var add []corev1.EnvVar
		for _, e := range proxyEnv {
			if !set[e.Name] {
				add = append(add, e)
			}
		}
		if len(add) > 0 {
			inj.env = append(inj.env, containerEnv{index: i, vars: add})
		}
	}
	return inj
}

func (inj injection) apply(meta *metav1.ObjectMeta, spec *corev1.PodSpec) {
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[AnnotationInjected] = inj.version
	spec.InitContainers = append([]corev1.Container{inj.sidecar}, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes, inj.volumes...)
	for _, ce := range inj.env {
		c := &spec.Containers[ce.index]
		c.Env = append(c.Env, ce.vars...)
	}
}

func sidecarContainer(cfg Config) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	healthz := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/healthz",
		Port: intstr.FromInt32(metricsPort),
	}}
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}
	}
	return corev1.Container{
		Name:  SidecarName,
		Image: cfg.Image,
		Args:  []string{"sidecar"},
		// A native sidecar (KEP-753): an init container that keeps
		// running, started before the app and stopped after it.
		RestartPolicy: &always,
		Env: []corev1.EnvVar{
			// WEFT_NODE_NAME refers to these two, so they come first:
			// $(VAR) only expands variables defined earlier in the list.
			{Name: "WEFT_POD_NAME", ValueFrom: field("metadata.name")},
			{Name: "WEFT_POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
			{Name: "WEFT_NODE_NAME", Value: "$(WEFT_POD_NAME).$(WEFT_POD_NAMESPACE)"},
			{Name: "WEFT_JOIN", Value: cfg.Join},
			{Name: "WEFT_GOSSIP_KEY_FILE", Value: gossipDir + "/key"},
			{Name: "WEFT_ANNOTATIONS_FILE", Value: podinfoDir + "/annotations"},
			{Name: "WEFT_SOCKS_ADDR", Value: socksAddr},
			{Name: "WEFT_HTTP_PROXY_ADDR", Value: httpProxyAddr},
			{Name: "WEFT_METRICS_ADDR", Value: ":9464"},
		},
		Ports: []corev1.ContainerPort{
			{Name: "weft-gossip", ContainerPort: gossipPort, Protocol: corev1.ProtocolTCP},
			{Name: "weft-gossip-u", ContainerPort: gossipPort, Protocol: corev1.ProtocolUDP},
			{Name: "weft-wg", ContainerPort: wireguardPort, Protocol: corev1.ProtocolUDP},
			{Name: "weft-metrics", ContainerPort: metricsPort, Protocol: corev1.ProtocolTCP},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: volGossip, MountPath: gossipDir, ReadOnly: true},
			{Name: volPodinfo, MountPath: podinfoDir, ReadOnly: true},
			{Name: volState, MountPath: stateDir},
		},
		StartupProbe:   &corev1.Probe{ProbeHandler: healthz, PeriodSeconds: 1, FailureThreshold: 60},
		ReadinessProbe: &corev1.Probe{ProbeHandler: healthz},
		LivenessProbe:  &corev1.Probe{ProbeHandler: healthz},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("25m"),
				corev1.ResourceMemory: resource.MustParse("48Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(int64(sidecarUID)),
			RunAsGroup:               ptr(int64(sidecarUID)),
			AllowPrivilegeEscalation: ptr(false),
			Privileged:               ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func sidecarVolumes(cfg Config) []corev1.Volume {
	return []corev1.Volume{
		{Name: volGossip, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: cfg.GossipSecret,
			Items:      []corev1.KeyToPath{{Key: cfg.GossipSecretKey, Path: "key"}},
			// Secret files belong to root; the sidecar runs as 65532 with no
			// fsGroup (the pod's is the app's business). The volume is
			// mounted into the sidecar alone, so world-readable exposes
			// the key to no other container.
			DefaultMode: ptr(int32(0o444)),
		}}},
		{Name: volPodinfo, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{
				Path:     "annotations",
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations"},
			}},
		}}},
		{Name: volState, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium:    corev1.StorageMediumMemory,
			SizeLimit: ptr(resource.MustParse("16Mi")),
		}}},
	}
}

func ptr[T any](v T) *T { return &v }
