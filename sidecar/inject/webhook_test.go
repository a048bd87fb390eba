package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// testNamespaces are the namespaces of the testdata reviews.
var testNamespaces = map[string]map[string]string{
	"shop":  {LabelInject: LabelInjectEnabled, "team": "shop"},
	"plain": {"team": "plain"},
}

func mapLabels(ctx context.Context, name string) (map[string]string, error) {
	l, ok := testNamespaces[name]
	if !ok {
		return nil, errors.New("namespaces \"" + name + "\" not found")
	}
	return l, nil
}

func newTestWebhook(t testing.TB, nsLabels NamespaceLabelsFunc) *Webhook {
	t.Helper()
	w, err := NewWebhook(testConfig, nsLabels, nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends body to h as the apiserver does and returns the recorder.
func post(h http.Handler, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/inject?timeout=10s", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decodeResponse checks the envelope of a 200 answer to request review
// and returns its response.
func decodeResponse(t *testing.T, request []byte, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var in, out admissionv1.AdmissionReview
	if err := json.Unmarshal(request, &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is no AdmissionReview: %v\n%s", err, rec.Body)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		t.Errorf("response apiVersion %q kind %q", out.APIVersion, out.Kind)
	}
	if out.Response == nil {
		t.Fatalf("response without response: %s", rec.Body)
	}
	if out.Response.UID != in.Request.UID {
		t.Errorf("response uid %q, want the request's %q", out.Response.UID, in.Request.UID)
	}
	if !out.Response.Allowed {
		t.Errorf("pod not allowed: the injector must never reject (%v)", out.Response.Result)
	}
	return out.Response
}

// applyPatch applies resp's JSONPatch to the request's object, as the
// apiserver does, and returns the patched JSON (the object itself when
// there is no patch).
func applyPatch(t *testing.T, request []byte, resp *admissionv1.AdmissionResponse) []byte {
	t.Helper()
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(request, &in); err != nil {
		t.Fatal(err)
	}
	if len(resp.Patch) == 0 {
		return in.Request.Object.Raw
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch: %v\n%s", err, resp.Patch)
	}
	out, err := p.Apply(in.Request.Object.Raw)
	if err != nil {
		t.Fatalf("apply patch: %v\n%s", err, resp.Patch)
	}
	return out
}

func decodePod(t *testing.T, raw []byte) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestWebhook drives the handler with AdmissionReviews as kube-apiserver
// sends them (testdata/review-*.json) and with bodies it never sends;
// every injected pod is the original with the patch applied by a real
// JSONPatch implementation, checked against the contract and against
// what the offline path makes of the same pod.
func TestWebhook(t *testing.T) {
	for _, tc := range []struct {
		name        string
		file        string // testdata file, or
		body        string // an inline body
		method      string
		contentType string
		wantStatus  int
		wantInject  bool
		wantWarning string // in the response's warnings
		wantText    string // in a non-200 body
	}{
		{name: "opted in by namespace label", file: "review-namespace-labelled.json", wantStatus: 200, wantInject: true},
		{name: "opted in by annotation", file: "review-annotated.json", wantStatus: 200, wantInject: true},
		{name: "not opted in", file: "review-not-opted-in.json", wantStatus: 200},
		{name: "opted out in labelled namespace", file: "review-opted-out.json", wantStatus: 200},
		{name: "already injected", file: "review-already-injected.json", wantStatus: 200},
		{name: "not a pod", file: "review-configmap.json", wantStatus: 200, wantWarning: "only injects pods, not configmaps"},
		{name: "malformed body", body: `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":`,
			wantStatus: 400, wantText: "decode AdmissionReview"},
		{name: "empty body", body: "", wantStatus: 400, wantText: "decode AdmissionReview"},
		{name: "wrong kind", body: `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}`,
			wantStatus: 400, wantText: `want kind AdmissionReview of apiVersion admission.k8s.io/v1, got kind "Pod"`},
		{name: "v1beta1 review", body: `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"1"}}`,
			wantStatus: 400, wantText: `apiVersion "admission.k8s.io/v1beta1"`},
		{name: "no request", body: `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`,
			wantStatus: 400, wantText: "without a request"},
		{name: "wrong content type", file: "review-annotated.json", contentType: "text/plain",
			wantStatus: 415, wantText: `want Content-Type application/json, got "text/plain"`},
		{name: "no content type", file: "review-annotated.json", contentType: "-",
			wantStatus: 415, wantText: "want Content-Type application/json"},
		{name: "content type with charset", file: "review-annotated.json", contentType: "application/json; charset=utf-8",
			wantStatus: 200, wantInject: true},
		{name: "GET", file: "review-annotated.json", method: http.MethodGet, wantStatus: 405, wantText: "want POST"},
		{name: "too large", body: `{"kind":"AdmissionReview","x":"` + strings.Repeat("a", MaxReviewBytes) + `"}`,
			wantStatus: 413, wantText: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			if tc.file != "" {
				body = readTestdata(t, tc.file)
			}
			method, ct := tc.method, tc.contentType
			if method == "" {
				method = http.MethodPost
			}
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			req := httptest.NewRequest(method, "/inject", bytes.NewReader(body))
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			rec := httptest.NewRecorder()
			newTestWebhook(t, mapLabels).ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantStatus != 200 {
				if !strings.Contains(rec.Body.String(), tc.wantText) {
					t.Errorf("body %q does not say %q", rec.Body, tc.wantText)
				}
				return
			}
			resp := decodeResponse(t, body, rec)
			if tc.wantWarning != "" && !strings.Contains(strings.Join(resp.Warnings, "\n"), tc.wantWarning) {
				t.Errorf("warnings %q do not say %q", resp.Warnings, tc.wantWarning)
			}
			if tc.wantWarning == "" && len(resp.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", resp.Warnings)
			}
			if !tc.wantInject {
				if len(resp.Patch) != 0 || resp.PatchType != nil {
					t.Errorf("patch %s, want none", resp.Patch)
				}
				return
			}
			var in admissionv1.AdmissionReview
			json.Unmarshal(body, &in)
			orig := decodePod(t, in.Request.Object.Raw)
			got := decodePod(t, applyPatch(t, body, resp))
			checkInjected(t, orig, got)

			offline := orig.DeepCopy()
			if _, err := InjectPod(&offline.ObjectMeta, &offline.Spec, testConfig); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(offline, got, valueCmp); d != "" {
				t.Errorf("webhook and offline injection differ (-offline +webhook):\n%s", d)
			}
		})
	}
}

// TestWebhookTwice: the pod the webhook made, sent again, gets no patch.
func TestWebhookTwice(t *testing.T) {
	w := newTestWebhook(t, mapLabels)
	for _, file := range []string{"review-namespace-labelled.json", "review-annotated.json"} {
		body := readTestdata(t, file)
		resp := decodeResponse(t, body, post(w, "application/json", body))
		injected := applyPatch(t, body, resp)

		var review map[string]any
		json.Unmarshal(body, &review)
		review["request"].(map[string]any)["object"] = json.RawMessage(injected)
		again, _ := json.Marshal(review)
		resp2 := decodeResponse(t, again, post(w, "application/json", again))
		if len(resp2.Patch) != 0 {
			t.Errorf("%s: second admission patched again: %s", file, resp2.Patch)
		}
	}
}

// TestWebhookNamespaceLookup: the namespace is looked up only when the
// pod's annotation does not decide, and a failed lookup admits the pod
// unchanged with a warning.
func TestWebhookNamespaceLookup(t *testing.T) {
	var calls atomic.Int32
	failing := func(ctx context.Context, name string) (map[string]string, error) {
		calls.Add(1)
		return nil, errors.New("apiserver unreachable")
	}
	w := newTestWebhook(t, failing)

	body := readTestdata(t, "review-namespace-labelled.json")
	resp := decodeResponse(t, body, post(w, "application/json", body))
	if len(resp.Patch) != 0 {
		t.Errorf("patched although the namespace could not be read: %s", resp.Patch)
	}
	if ws := strings.Join(resp.Warnings, "\n"); !strings.Contains(ws, "labels of namespace shop: apiserver unreachable") {
		t.Errorf("warnings %q do not say why", resp.Warnings)
	}
	if calls.Load() != 1 {
		t.Errorf("%d lookups, want 1", calls.Load())
	}

	calls.Store(0)
	for _, file := range []string{"review-annotated.json", "review-opted-out.json", "review-already-injected.json"} {
		body := readTestdata(t, file)
		decodeResponse(t, body, post(w, "application/json", body))
	}
	if calls.Load() != 0 {
		t.Errorf("%d namespace lookups for pods the annotations decide, want 0", calls.Load())
	}

	// Without a lookup at all, only the annotation opts in.
	w = newTestWebhook(t, nil)
	body = readTestdata(t, "review-namespace-labelled.json")
	if resp := decodeResponse(t, body, post(w, "application/json", body)); len(resp.Patch) != 0 {
		t.Errorf("patched with no namespace lookup and no annotation: %s", resp.Patch)
	}
	body = readTestdata(t, "review-annotated.json")
	if resp := decodeResponse(t, body, post(w, "application/json", body)); len(resp.Patch) == 0 {
		t.Error("annotated pod not patched with no namespace lookup")
	}
}

// TestWebhookOddRequests: updates, subresources and objects that are no
// pod are admitted unchanged, never rejected.
func TestWebhookOddRequests(t *testing.T) {
	w := newTestWebhook(t, mapLabels)
	base := readTestdata(t, "review-namespace-labelled.json")
	for _, tc := range []struct {
		name        string
		edit        func(req map[string]any)
		wantWarning string
	}{
		{"update", func(r map[string]any) { r["operation"] = "UPDATE" }, ""},
		{"subresource", func(r map[string]any) { r["subResource"] = "ephemeralcontainers" }, "not pods/ephemeralcontainers"},
		{"object not a pod", func(r map[string]any) { r["object"] = map[string]any{"spec": "nope"} }, "decode pod"},
		{"deployments", func(r map[string]any) {
			r["resource"] = map[string]any{"group": "apps", "version": "v1", "resource": "deployments"}
		}, "not deployments.apps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var review map[string]any
			json.Unmarshal(base, &review)
			tc.edit(review["request"].(map[string]any))
			body, _ := json.Marshal(review)
			rec := post(w, "application/json", body)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			resp := decodeResponse(t, body, rec)
			if len(resp.Patch) != 0 {
				t.Errorf("patch %s, want none", resp.Patch)
			}
			ws := strings.Join(resp.Warnings, "\n")
			if tc.wantWarning == "" && ws != "" || !strings.Contains(ws, tc.wantWarning) {
				t.Errorf("warnings %q, want %q", ws, tc.wantWarning)
			}
		})
	}
}

// TestWebhookKeepsUnknownFields: fields this k8s.io/api does not know (a
// newer apiserver's) survive injection, because the patch only adds.
func TestWebhookKeepsUnknownFields(t *testing.T) {
	var review map[string]any
	json.Unmarshal(readTestdata(t, "review-annotated.json"), &review)
	obj := review["request"].(map[string]any)["object"].(map[string]any)
	obj["spec"].(map[string]any)["futurePodField"] = map[string]any{"x": 1.0}
	obj["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["futureContainerField"] = "kept"
	body, _ := json.Marshal(review)
	resp := decodeResponse(t, body, post(newTestWebhook(t, mapLabels), "application/json", body))
	var got map[string]any
	json.Unmarshal(applyPatch(t, body, resp), &got)
	spec := got["spec"].(map[string]any)
	if !cmp.Equal(spec["futurePodField"], map[string]any{"x": 1.0}) {
		t.Errorf("futurePodField = %v", spec["futurePodField"])
	}
	if v := spec["containers"].([]any)[0].(map[string]any)["futureContainerField"]; v != "kept" {
		t.Errorf("futureContainerField = %v", v)
	}
}

// FuzzWebhookHandler: any body gets a well-formed HTTP answer, never a
// panic; a 200 is an AdmissionReview that allows.
func FuzzWebhookHandler(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "review-*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"1","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":{"metadata":null,"spec":{"containers":[{"env":null}]}}}}`))
	f.Add([]byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"1","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":{"metadata":{"annotations":{"weft.dev/inject":"true"}}}}}`))
	f.Add([]byte("null"))
	f.Add([]byte("[]"))
	w := newTestWebhook(f, mapLabels)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := post(w, "application/json", body)
		switch rec.Code {
		case 200:
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("200 with a body that is no AdmissionReview: %v", err)
			}
			if out.Response == nil || !out.Response.Allowed {
				t.Fatalf("200 without an allowing response: %s", rec.Body)
			}
		case 400, 413:
			if rec.Body.Len() == 0 {
				t.Fatalf("%d without a message", rec.Code)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
