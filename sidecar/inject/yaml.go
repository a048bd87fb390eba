package inject

import (
	"bytes"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// InjectYAML injects the sidecar into every workload of the multi-document
// YAML in (documents separated by "---" lines) and returns the whole
// result, or an error naming the first document it cannot read, and no
// output then.
//
// Workloads are Pods (v1), Deployments, StatefulSets, DaemonSets,
// ReplicaSets (apps/v1), Jobs and CronJobs (batch/v1), also as items of a
// v1 List. Offline there are no namespace labels to ask, so every workload
// is injected unless its pod template is annotated weft.dev/inject: "false"
// (or is injected already). A document InjectYAML injects is re-encoded
// from the typed object: keys sorted, comments gone; one holding a field
// that object does not know is refused rather than silently cut. Every
// other document, separator line and comment is copied byte for byte, so
// InjectYAML of its own output returns that output unchanged.
func InjectYAML(in []byte, cfg Config) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	docs, err := splitDocuments(in)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(len(in) + len(docs)*2048)
	for i, d := range docs {
		body, err := injectDocument(d.body, d.line, cfg)
		if err != nil {
			return nil, fmt.Errorf("document %d (from line %d): %w", i+1, d.line, err)
		}
		out.Write(d.sep)
		out.Write(body)
	}
	return out.Bytes(), nil
}

// document is one YAML document of a stream: the separator line before it
// ("" for the first) and its text, which starts at line (1-based).
type document struct {
	sep, body []byte
	line      int
}

// splitDocuments cuts a YAML stream at its "---" lines. As in kubectl
// (k8s.io/apimachinery/pkg/util/yaml.YAMLReader), only a comment may follow
// "---" on a separator line. The pieces, joined, are exactly in.
func splitDocuments(in []byte) ([]document, error) {
	docs := []document{{line: 1}}
	start, lineNo := 0, 1
	for pos := 0; pos < len(in); lineNo++ {
		end := bytes.IndexByte(in[pos:], '\n')
		if end < 0 {
			end = len(in)
		} else {
			end += pos + 1
		}
		line := in[pos:end]
		if bytes.HasPrefix(line, []byte("---")) {
			rest := bytes.TrimSpace(line[3:])
			if len(rest) > 0 && rest[0] != '#' {
				return nil, fmt.Errorf("line %d: document separator %q: only a comment may follow \"---\"", lineNo, bytes.TrimRight(line, "\r\n"))
			}
			docs[len(docs)-1].body = in[start:pos]
			docs = append(docs, document{sep: line, line: lineNo + 1})
			start = end
		}
		pos = end
	}
	docs[len(docs)-1].body = in[start:]
	return docs, nil
}

// injectDocument returns body, which starts at line of the stream, itself
// unless it is a workload to inject.
func injectDocument(body []byte, line int, cfg Config) ([]byte, error) {
	j, err := yaml.YAMLToJSON(body)
	if err != nil {
		return nil, yamlError(err, yaml.YAMLToJSON, body, line)
	}
	obj, err := injectObject(j, cfg)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return body, nil
	}
	// Duplicate keys (which YAMLToJSON resolves silently, last one wins)
	// would be merged away by re-encoding: refuse as kubectl does.
	if _, err := yaml.YAMLToJSONStrict(body); err != nil {
		return nil, yamlError(err, yaml.YAMLToJSONStrict, body, line)
	}
	return yaml.Marshal(obj)
}

// yamlError parses body again, behind line-1 empty lines, so that the
// parser's error counts lines from the start of the stream, not of the
// document; err if it somehow does not fail again. Only on the error
// path: it copies the document.
func yamlError(err error, parse func([]byte) ([]byte, error), body []byte, line int) error {
	padded := append(bytes.Repeat([]byte("\n"), line-1), body...)
	if _, perr := parse(padded); perr != nil {
		return perr
	}
	return err
}

// injectObject injects into the object j (JSON) when it is a workload that
// is neither opted out nor injected, and returns it; nil means leave j as
// it is.
func injectObject(j []byte, cfg Config) (any, error) {
	var tm metav1.TypeMeta
	if json.Unmarshal(j, &tm) != nil {
		return nil, nil // a scalar or a sequence: not a Kubernetes object
	}
	if tm.APIVersion == "v1" && tm.Kind == "List" {
		return injectList(j, cfg)
	}
	obj, template := workload(tm)
	if obj == nil {
		return nil, nil
	}
	if err := json.Unmarshal(j, obj); err != nil {
		// encoding/json fills what it can before a type error: the name
		// is usually there.
		return nil, fmt.Errorf("%s %s: %w", tm.Kind, obj.(metav1.Object).GetName(), err)
	}
	meta, spec := template()
	if optedOut(meta.Annotations) || Injected(meta, spec) {
		return nil, nil
	}
	strict, _ := workload(tm)
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(strict); err != nil {
		return nil, fmt.Errorf("%s %s: %w (k8s.io/api of weft does not know it: re-encoding would drop it)",
			tm.Kind, obj.(metav1.Object).GetName(), err)
	}
	if _, err := InjectPod(meta, spec, cfg); err != nil {
		return nil, err
	}
	return obj, nil
}

// injectList injects into the items of a v1 List (what `kubectl get -o
// yaml` prints); nil when no item changes.
func injectList(j []byte, cfg Config) (any, error) {
	var list corev1.List
	if err := json.Unmarshal(j, &list); err != nil {
		return nil, fmt.Errorf("List: %w", err)
	}
	changed := false
	for i := range list.Items {
		obj, err := injectObject(list.Items[i].Raw, cfg)
		if err != nil {
			return nil, fmt.Errorf("List item %d: %w", i, err)
		}
		if obj == nil {
			continue
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("List item %d: %w", i, err)
		}
		list.Items[i].Raw, changed = raw, true
	}
	if !changed {
		return nil, nil
	}
	return &list, nil
}

// workload returns a new typed object for the kinds InjectYAML injects, and
// a function giving its pod template; nil for any other kind.
func workload(tm metav1.TypeMeta) (any, func() (*metav1.ObjectMeta, *corev1.PodSpec)) {
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Pod":
		o := &corev1.Pod{}
		return o, func() (*metav1.ObjectMeta, *corev1.PodSpec) { return &o.ObjectMeta, &o.Spec }
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		return o, podTemplate(&o.Spec.Template)
	case "apps/v1 StatefulSet":
		o := &appsv1.StatefulSet{}
		return o, podTemplate(&o.Spec.Template)
	case "apps/v1 DaemonSet":
		o := &appsv1.DaemonSet{}
		return o, podTemplate(&o.Spec.Template)
	case "apps/v1 ReplicaSet":
		o := &appsv1.ReplicaSet{}
		return o, podTemplate(&o.Spec.Template)
	case "batch/v1 Job":
		o := &batchv1.Job{}
		return o, podTemplate(&o.Spec.Template)
	case "batch/v1 CronJob":
		o := &batchv1.CronJob{}
		return o, podTemplate(&o.Spec.JobTemplate.Spec.Template)
	}
	return nil, nil
}

// podTemplate gives the metadata and spec of t, once the object holding
// it has been decoded.
func podTemplate(t *corev1.PodTemplateSpec) func() (*metav1.ObjectMeta, *corev1.PodSpec) {
	return func() (*metav1.ObjectMeta, *corev1.PodSpec) { return &t.ObjectMeta, &t.Spec }
}
