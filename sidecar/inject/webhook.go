package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxReviewBytes bounds the body of one AdmissionReview. The apiserver
// caps objects at 1.5 MiB in etcd; a review carries the object (and for
// updates the old one) plus a little, so 4 MiB is ample.
const MaxReviewBytes = 4 << 20

// NamespaceLabelsFunc returns the labels of the namespace called name.
type NamespaceLabelsFunc func(ctx context.Context, name string) (map[string]string, error)

// Webhook is the mutating admission webhook that injects the sidecar: an
// http.Handler for admission.k8s.io/v1 AdmissionReviews of pods. It never
// rejects a pod: whatever goes wrong while deciding or mutating, the pod is
// allowed unchanged, with a warning for the user and a log line.
type Webhook struct {
	cfg      Config
	nsLabels NamespaceLabelsFunc
	log      *slog.Logger
}

// NewWebhook returns the webhook injecting cfg. nsLabels looks up the
// labels of a pod's namespace (AdmissionReviews do not carry them); with a
// nil nsLabels only the pod annotation opts pods in.
func NewWebhook(cfg Config, nsLabels NamespaceLabelsFunc, log *slog.Logger) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Webhook{cfg: cfg, nsLabels: nsLabels, log: log}, nil
}

// ServeHTTP answers one AdmissionReview. A request that is not one (wrong
// method, content type, size, or an undecodable body) gets a plain-text
// HTTP error; every decodable review gets an allowing response, with a
// JSONPatch when the pod is injected.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "weft injector: want POST of an AdmissionReview, got "+r.Method, http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(rw, fmt.Sprintf("weft injector: want Content-Type application/json, got %q", r.Header.Get("Content-Type")),
			http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxReviewBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(rw, fmt.Sprintf("weft injector: AdmissionReview larger than %d bytes", MaxReviewBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "weft injector: read AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(rw, "weft injector: decode AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		http.Error(rw, fmt.Sprintf("weft injector: want kind AdmissionReview of apiVersion %s, got kind %q of apiVersion %q",
			admissionv1.SchemeGroupVersion, review.Kind, review.APIVersion), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(rw, "weft injector: AdmissionReview without a request", http.StatusBadRequest)
		return
	}
	out := admissionv1.AdmissionReview{
		TypeMeta: review.TypeMeta,
		Response: w.admit(r.Context(), review.Request),
	}
	b, err := json.Marshal(out)
	if err != nil {
		// Not reachable with these types; still, answer rather than panic.
		http.Error(rw, "weft injector: encode AdmissionReview: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Write(b)
}

var podsResource = metav1.GroupVersionResource{Group: "", Version: "v1", Resource: "pods"}

// admit decides on one request; it always allows.
func (w *Webhook) admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Resource != podsResource || req.SubResource != "" {
		what := req.Resource.Resource
		if req.Resource.Group != "" {
			what += "." + req.Resource.Group
		}
		if req.SubResource != "" {
			what += "/" + req.SubResource
		}
		resp.Warnings = []string{fmt.Sprintf("weft injector: only injects pods, not %s (check the MutatingWebhookConfiguration's rules)", what)}
		return resp
	}
	if req.Operation != admissionv1.Create {
		// A running pod's containers cannot change; nothing to do.
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return w.skip(resp, req, fmt.Errorf("decode pod: %w", err))
	}
	if Injected(&pod.ObjectMeta, &pod.Spec) {
		return resp
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	var labels map[string]string
	if _, decided := annotationSays(pod.Annotations); !decided && w.nsLabels != nil {
		var err error
		if labels, err = w.nsLabels(ctx, ns); err != nil {
			return w.skip(resp, req, fmt.Errorf("labels of namespace %s: %w", ns, err))
		}
	}
	if !Wanted(labels, pod.Annotations) {
		return resp
	}
	patch, err := json.Marshal(jsonPatch(req.Object.Raw, &pod, planInjection(&pod.ObjectMeta, &pod.Spec, w.cfg)))
	if err != nil {
		return w.skip(resp, req, fmt.Errorf("encode patch: %w", err))
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	w.log.Info("injected weft sidecar", "namespace", ns, "pod", podName(req, &pod), "uid", req.UID)
	return resp
}

// skip allows the pod unchanged and says why, to the user and in the log.
func (w *Webhook) skip(resp *admissionv1.AdmissionResponse, req *admissionv1.AdmissionRequest, err error) *admissionv1.AdmissionResponse {
	w.log.Warn("pod admitted without weft sidecar", "namespace", req.Namespace, "name", req.Name, "uid", req.UID, "err", err)
	resp.Warnings = append(resp.Warnings, "weft injector: pod admitted without the weft sidecar: "+err.Error())
	return resp
}

func podName(req *admissionv1.AdmissionRequest, pod *corev1.Pod) string {
	switch {
	case req.Name != "":
		return req.Name
	case pod.Name != "":
		return pod.Name
	}
	return pod.GenerateName + "*"
}

// patchOp is one RFC 6902 operation. Only "add" is used: adding to an
// existing object member replaces it, adding at an array index inserts, and
// "-" appends, which is all injection needs, without ever rewriting the
// app's containers (fields this injector's k8s.io/api does not know stay).
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// jsonPatch turns inj into operations on raw, the pod as the apiserver sent
// it; pod is raw decoded.
func jsonPatch(raw []byte, pod *corev1.Pod, inj injection) []patchOp {
	var ops []patchOp
	add := func(path string, v any) { ops = append(ops, patchOp{Op: "add", Path: path, Value: v}) }

	var top struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &top) // raw decoded as a Pod just before
	switch {
	case len(top.Metadata) == 0 || string(top.Metadata) == "null":
		add("/metadata", map[string]any{"annotations": map[string]string{AnnotationInjected: inj.version}})
	case pod.Annotations == nil:
		add("/metadata/annotations", map[string]string{AnnotationInjected: inj.version})
	default:
		add("/metadata/annotations/"+escapePointer(AnnotationInjected), inj.version)
	}

	if len(pod.Spec.InitContainers) == 0 {
		add("/spec/initContainers", []corev1.Container{inj.sidecar})
	} else {
		add("/spec/initContainers/0", inj.sidecar)
	}

	if len(pod.Spec.Volumes) == 0 {
		if len(inj.volumes) > 0 {
			add("/spec/volumes", inj.volumes)
		}
	} else {
		for _, v := range inj.volumes {
			add("/spec/volumes/-", v)
		}
	}

	for _, ce := range inj.env {
		base := "/spec/containers/" + strconv.Itoa(ce.index) + "/env"
		if len(pod.Spec.Containers[ce.index].Env) == 0 {
			add(base, ce.vars)
			continue
		}
		for _, e := range ce.vars {
			add(base+"/-", e)
		}
	}
	return ops
}

// escapePointer escapes one JSON Pointer reference token (RFC 6901 §3).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
